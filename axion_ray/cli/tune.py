"""`axion-ray tune stage2|stage3|classifier` — thin wrappers over `axion_ray.tune.sweeps`."""

from __future__ import annotations

import argparse
import sys

from axion_ray.cli.classify import add_training_options, classifier_config
from axion_ray.cli.options import EXIT_OK, add_model_options, config_from_args, given, int_list, say
from axion_ray.cli.train import add_schedule_options, add_training_data_options
from axion_ray.models.presets import ENCODERS


def _resources(text: str) -> dict[str, float]:
    """`workers=2,cpus=0.8,gpus=1` → per-trial training resources."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in ("workers", "cpus", "gpus") or not value:
            raise argparse.ArgumentTypeError(f"expected workers=N,cpus=X,gpus=0|1, got {text!r}")
        try:
            out[key] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key} must be a number, got {value!r}") from None
    return out


def _sweep(args, **defaults):
    """SweepConfig from the options; `defaults` stand where an option was not given."""
    from axion_ray.tune.sweeps import SweepConfig

    r = args.resources_per_trial or {}
    args = argparse.Namespace(**{**vars(args), **{k: v for k, v in defaults.items() if getattr(args, k) is None}})
    return config_from_args(SweepConfig, args, workers_per_trial=int(r["workers"]) if "workers" in r else None,
                            cpus_per_worker=r.get("cpus"), gpus_per_trial=bool(r["gpus"]) if "gpus" in r else None)


def _print_summary(s) -> None:
    best = s.get("best")
    if best:
        print(f"best trial {best['trial_id']}: score {best.get('score', float('nan')):.4f} "
              f"({'PASS' if best.get('passes') else 'FAIL'}) config {best['config']}")
    print(f"{s['trials']} trial(s) → {s['out']}/results.csv, best_config.yaml, SWEEP.md, sweep.png"
          + (f"; exported {s['export']}" if s.get("export") else ""))


def _failed(exc: Exception) -> int:
    print(f"axion-ray tune: {exc}", file=sys.stderr)
    return 1


def cmd_tune_stage2(args):
    from axion_ray.config import TrainConfig
    from axion_ray.tune.sweeps import SweepFailedError, tune_stage2

    base = config_from_args(TrainConfig, args, val_every_steps=args.val_every)
    try:
        _print_summary(tune_stage2(args.train, args.val, args.out, base, _sweep(args), args.space, say=say))
    except SweepFailedError as exc:
        return _failed(exc)
    return EXIT_OK


def cmd_tune_regress(args):
    from axion_ray.config import TrainConfig
    from axion_ray.tune.sweeps import SweepFailedError, tune_stage2

    base = config_from_args(TrainConfig, args, val_every_steps=args.val_every, kind="regress")
    try:
        _print_summary(tune_stage2(args.train, args.val, args.out, base, _sweep(args), args.space, say=say))
    except SweepFailedError as exc:
        return _failed(exc)
    return EXIT_OK


def cmd_tune_stage3(args):
    from axion_ray.tune.sweeps import STAGE3_SAMPLES, SweepFailedError, tune_stage3

    try:
        options = given(timesteps=args.timesteps, condition=args.condition, max_tiles=args.max_tiles,
                        preset=args.preset, weights=args.weights, checkpoint=args.checkpoint,
                        allow_random_init=args.allow_random_init)
        _print_summary(tune_stage3(args.store, args.out, sweep=_sweep(args, samples=STAGE3_SAMPLES),
                                   space_file=args.space, say=say, **options))
    except SweepFailedError as exc:
        return _failed(exc)
    return EXIT_OK


def cmd_tune_classifier(args):
    from axion_ray.tune.sweeps import SweepFailedError, tune_classifier

    models = tuple(m for m in (args.models or "").split(",") if m)
    try:
        _print_summary(tune_classifier(args.data, args.out, classifier_config(args), models=models,
                                       sweep=_sweep(args), space_file=args.space, say=say))
    except SweepFailedError as exc:
        return _failed(exc)
    return EXIT_OK


def _sweep_options(p: argparse.ArgumentParser, out_and_seed: bool = True) -> None:
    if out_and_seed:
        p.add_argument("--out", required=True, help="sweep directory")
        p.add_argument("--seed", type=int)
    p.add_argument("--samples", type=int, help="trials drawn from the space")
    p.add_argument("--space", help="search-space YAML (replaces the default space)")
    p.add_argument("--scheduler", choices=["asha", "fifo"])
    p.add_argument("--max-concurrent", type=int)
    p.add_argument("--resources-per-trial", type=_resources, help="workers=N,cpus=X,gpus=0|1 for each trial's trainer")
    p.add_argument("--resume", action="store_true", default=None, help="continue an interrupted sweep in --out")


def add_tune_parser(sub) -> None:
    group = sub.add_parser("tune", help="Ray Tune sweeps against the composite score / validation accuracy")
    tsub = group.add_subparsers(dest="tune_command", required=True, parser_class=type(group))

    p = tsub.add_parser("stage2", help="sweep Stage 2 training (lr, weight decay, loss weights, LoRA …)")
    add_training_data_options(p)
    add_model_options(p, sampling=False)
    add_schedule_options(p)
    _sweep_options(p)
    p.set_defaults(func=cmd_tune_stage2)

    p = tsub.add_parser("regress", help="sweep the training of a regression stage (same space as stage2): Stage 1, "
                        "Stage 2's per-pixel calibrator of opt_v1, or Stage 3")
    p.add_argument("--stage", type=int, choices=[1, 2, 3], required=True)
    add_training_data_options(p)
    add_model_options(p, sampling=False)
    add_schedule_options(p)
    p.add_argument("--encoder", choices=list(ENCODERS), help="default: TerraMind's where its published file is "
                   "on disk, else what measured best from scratch (Stage 1 the UNet; Stages 2 and 3 the per-pixel "
                   "calibrator, Stage 2's only encoder)")
    _sweep_options(p)
    p.set_defaults(func=cmd_tune_regress)

    p = tsub.add_parser("stage3", help="score Stage 3 diffusion timesteps (and other knobs): quality and tiles/s")
    p.add_argument("--store", required=True, help="store with s1, the condition and s2_truth")
    p.add_argument("--timesteps", type=int_list, help="diffusion steps to score (default 1,2,5,10,20)")
    p.add_argument("--condition", choices=["opt_v1", "opt_v2"])
    p.add_argument("--max-tiles", type=int)
    add_model_options(p, sampling=False)
    p.add_argument("--checkpoint", help="a Stage 3 checkpoint (LoRA adapters) to sweep")
    _sweep_options(p)
    p.set_defaults(func=cmd_tune_stage3)

    p = tsub.add_parser("classifier", help="sweep label smoothing, lr, augmentation, backbone (pit recall a floor)")
    add_training_options(p)  # brings --out (the sweep directory here) and --seed
    p.add_argument("--models", help="backbones to sweep, comma-separated (presets or timm names)")
    _sweep_options(p, out_and_seed=False)
    p.set_defaults(func=cmd_tune_classifier)
