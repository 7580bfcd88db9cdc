"""Search spaces as data: a YAML mapping of parameter → distribution, turned into Ray Tune's.

    lr: {loguniform: [1.0e-4, 1.0e-2]}
    weight_decay: {loguniform: [1.0e-6, 1.0e-2]}
    w_ndvi: {uniform: [0.5, 4.0]}
    lora_rank: {choice: [0, 4, 8]}
    epochs: 3                       # a constant
    timesteps: {grid: [1, 2, 5]}    # every value, in every sample

Every parameter must be a field of the target's config (`TrainConfig`, `ClassifierConfig`, ...);
an unknown one is a user error naming the valid ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from axion_ray.errors import ConfigError

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint", "grid")


def to_tune(name: str, spec: Any):
    """One parameter's spec → a Ray Tune domain (or the constant itself)."""
    from ray import tune

    if not isinstance(spec, dict):
        return spec
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"search space entry {name!r}: expected one of {', '.join(DISTRIBUTIONS)} "
                          f"as its only key, got {list(spec)}")
    kind, args = next(iter(spec.items()))
    try:
        if kind in ("uniform", "loguniform", "randint"):
            low, high = args
            if not low < high:
                raise ConfigError(f"search space entry {name!r}: low must be below high, got {args}")
            return getattr(tune, kind)(float(low) if kind != "randint" else int(low),
                                       float(high) if kind != "randint" else int(high))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"search space entry {name!r}: {kind} needs a non-empty list of values")
        return tune.choice(args) if kind == "choice" else tune.grid_search(args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"search space entry {name!r}: {kind} {args!r} is not valid ({exc})") from None


def build_space(spec: dict[str, Any], config_type: type) -> dict[str, Any]:
    """Validate parameter names against `config_type`'s fields and convert every distribution."""
    fields = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for {config_type.__name__}; "
                          f"valid: {', '.join(sorted(fields))}")
    return {name: to_tune(name, value) for name, value in spec.items()}


def load_space(path: str | Path | None, default: dict[str, Any], config_type: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """(raw spec, Tune space): the file's entries over the defaults (a file replaces the default space)."""
    from axion_ray.config import read_yaml_mapping

    raw = dict(default) if path is None else read_yaml_mapping(path)
    return raw, build_space(raw, config_type)


def swept(raw: dict[str, Any]) -> list[str]:
    """The parameters that vary (not constants), in file order."""
    return [k for k, v in raw.items() if isinstance(v, dict)]
