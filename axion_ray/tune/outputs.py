"""What a sweep leaves in its directory: `results.csv`, `best_config.yaml`, `SWEEP.md`, `sweep.png`.

Rows are ranked by `rank_score` (`metrics.composite.rank_score`): every trial that fails its hard
constraints (or recall floor) ranks below every trial that passes. The best trial is the first row.
"What each parameter did" is measured on the trials themselves: Spearman's rank correlation with the
score for numeric parameters, the mean score per value for the others.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_CSV = "results.csv"


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted best first by `rank_score` (NaN last), with a 1-based `rank`."""
    def key(r: dict[str, Any]) -> float:
        v = r.get("rank_score")
        return -math.inf if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    ranked = sorted(rows, key=key, reverse=True)
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return ranked


def write_results_csv(rows: list[dict[str, Any]], path: Path, params: list[str], metrics: list[str]) -> None:
    columns = ["rank", "trial_id", *[f"config/{p}" for p in params], *metrics, "passes", "rank_score", "iterations",
               "time_s", "status"]
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**{f"config/{p}": r["config"].get(p) for p in params}, **r})
    tmp.replace(path)


def parameter_effects(rows: list[dict[str, Any]], params: list[str]) -> dict[str, str]:
    """One sentence per swept parameter, from the trials that produced a score (passing ones only when any pass)."""
    from scipy.stats import spearmanr

    scored = [r for r in rows if r.get("passes")] or rows
    scored = [r for r in scored if r.get("score") is not None and np.isfinite(r["score"])]
    effects = {}
    for p in params:
        values = [r["config"].get(p) for r in scored]
        scores = [r["score"] for r in scored]
        if len(set(map(str, values))) < 2:
            effects[p] = "not varied among the scored trials"
        elif len(set(scores)) < 2:
            effects[p] = "no effect measured (every scored trial has the same score)"
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            rho = spearmanr(values, scores).statistic
            direction = "higher is better" if rho > 0.3 else "lower is better" if rho < -0.3 else "no clear trend"
            effects[p] = f"Spearman ρ = {rho:+.2f} with the score over {len(scored)} trials ({direction})"
        else:
            means = {}
            for v, s in zip(values, scores):
                means.setdefault(str(v), []).append(s)
            parts = ", ".join(f"{k}: {np.mean(v):+.4f} (n={len(v)})" for k, v in
                              sorted(means.items(), key=lambda kv: -np.mean(kv[1])))
            effects[p] = f"mean score by value — {parts}"
    return effects


def plot_scores(rows: list[dict[str, Any]], params: list[str], path: Path, score_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(params))
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
    for ax, p in zip(axes[0], params or ["(none)"]):
        for passes, colour, label in ((True, "tab:green", "passes"), (False, "tab:red", "fails constraints")):
            pts = [(r["config"].get(p), r["score"]) for r in rows if bool(r.get("passes")) == passes
                   and r.get("score") is not None and np.isfinite(r["score"])]
            if pts:
                xs, ys = zip(*pts)
                if not all(isinstance(x, (int, float)) for x in xs):
                    xs = [str(x) for x in xs]
                ax.scatter(xs, ys, c=colour, label=label)
        values = [r["config"].get(p) for r in rows]
        if p in params and all(isinstance(v, float) for v in values) and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel(score_name)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep_markdown(title: str, rows: list[dict[str, Any]], params: list[str], metrics: list[str],
                   effects: dict[str, str], score_name: str, notes: str = "") -> str:
    head = "| rank | trial | " + " | ".join(params) + " | " + " | ".join(metrics) + " | passes | iterations | time (s) |"
    sep = "|" + "---|" * (3 + len(params) + len(metrics) + 2)
    lines = [head, sep]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    for r in rows:
        lines.append(f"| {r['rank']} | {r['trial_id']} | " + " | ".join(fmt(r['config'].get(p)) for p in params) + " | "
                     + " | ".join(fmt(r.get(m)) for m in metrics)
                     + f" | {'PASS' if r.get('passes') else 'FAIL'} | {r.get('iterations')} | {fmt(r.get('time_s'))} |")
    best = rows[0] if rows else None
    best_text = ("none (no trial reported)" if best is None else
                 f"`{best['trial_id']}` — {score_name} {fmt(best.get('score'))}, "
                 f"{'passes' if best.get('passes') else '**fails** (no trial passed)'}; config: "
                 + ", ".join(f"{p} = {fmt(best['config'].get(p))}" for p in params))
    effect_lines = "\n".join(f"- **{p}**: {e}" for p, e in effects.items()) or "- (nothing was swept)"
    return f"""# {title}

Sorted by {score_name}; a trial that fails its hard constraints ranks below every trial that passes.
{notes}
## Best trial

{best_text}

## Trials

{chr(10).join(lines)}

## What each parameter did

{effect_lines}

Plot: `sweep.png` ({score_name} against each swept parameter).
"""


def write_outputs(out: Path, title: str, rows: list[dict[str, Any]], params: list[str], metrics: list[str],
                  score_name: str, best_config: dict[str, Any] | None, notes: str = "") -> list[dict[str, Any]]:
    """Write the sweep's files; `best_config.yaml` only when a trial produced a score (None: all failed)."""
    import yaml

    ranked = rank_rows(rows)
    write_results_csv(ranked, out / RESULTS_CSV, params, metrics)
    if best_config is not None:
        (out / "best_config.yaml").write_text(yaml.safe_dump(best_config, sort_keys=False))
    effects = parameter_effects(ranked, params)
    (out / "SWEEP.md").write_text(sweep_markdown(title, ranked, params, metrics, effects, score_name, notes))
    plot_scores(ranked, params, out / "sweep.png", score_name)
    return ranked
