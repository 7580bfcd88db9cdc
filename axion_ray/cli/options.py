"""What every command line shares: the one-line-error parser, value parsers, shared options, and the
step from parsed options to a typed config.

Options that map onto a config default to None, so the config's dataclass holds the only default
(timm's `create_model` habit): `config_from_args` passes on only what the user gave. Choices come
from the registries (`models/presets.py`), never typed out here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, TypeVar

EXIT_OK, EXIT_USER_ERROR = 0, 2
T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake on one line (exit 2) instead of a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


# ---------------------------------------------------------------------------- value parsers
def int_list(text: str) -> tuple[int, ...]:
    """`1,2,3` → (1, 2, 3)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def min_max(text: str) -> tuple[int, int]:
    """`MIN:MAX` (or `N`, meaning N:N) → (MIN, MAX): the one parser of elastic bounds."""
    try:
        lo, _, hi = text.partition(":")
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX (e.g. 1:4) or N, got {text!r}") from None


def class_names(text: str) -> tuple[str, ...]:
    """`clean,pit` → two or more distinct class names."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected two or more distinct class names, got {text!r}")
    return names


# ---------------------------------------------------------------------------- shared options
def preset_choices() -> list[str]:
    from axion_ray.models.presets import PRESETS

    return list(PRESETS)


def add_preset_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=preset_choices(), help="model size (default: tiny)")


def add_model_options(p: argparse.ArgumentParser, *, sampling: bool = True) -> None:
    """Options every command that builds a stage model takes."""
    add_preset_option(p)
    p.add_argument("--weights", help="pretrained weights file or directory (else $AXION_RAY_WEIGHTS, HF cache)")
    if sampling:
        p.add_argument("--timesteps", type=int, help="TerraMind diffusion steps")
        p.add_argument("--seed", type=int, help="sampling seed (reproducible runs)")
    p.add_argument("--allow-random-init", action="store_true", default=None,
                   help="build with random weights when pretrained ones are missing (tests, smoke runs)")


def add_ray_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")


# ---------------------------------------------------------------------------- options → config
def given(**values: Any) -> dict[str, Any]:
    """The keyword arguments the user actually gave (None = not given: the callee's default holds)."""
    return {k: v for k, v in values.items() if v is not None}


def config_from_args(cls: type[T], args: argparse.Namespace, **renamed: Any) -> T:
    """`cls` from the parsed options whose names are its fields, plus `renamed` values; None means
    "not given", so the dataclass default holds."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in fields}
    values.update(renamed)
    return cls(**given(**values))


def say(line: str) -> None:
    print(line, flush=True)


def warn(line: str) -> None:
    print(line, file=sys.stderr)


# ---------------------------------------------------------------------------- report files
def add_overwrite_option(p: argparse.ArgumentParser, what: str = "an existing output file") -> None:
    p.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def checked_output(path: str | None, inputs: tuple[str, ...] = (), *, overwrite: bool, what: str) -> str | None:
    """Check a file the command will write — before any work: not an input, not under a file, not an
    existing file unless `--overwrite` (None: not asked for)."""
    if path is None:
        return None
    from axion_ray.store.location import check_output

    return check_output(path, inputs, overwrite=overwrite, what=what)


def write_output(path: str, text: str) -> None:
    """Write a report file atomically (temp name + rename): whole or absent."""
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)

