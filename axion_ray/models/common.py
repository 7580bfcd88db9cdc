"""Small pieces the stage models share: devices, precision, padding, seeded sampling."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from axion_ray.errors import DeviceError

#: What the pipeline and `StageRunner` read off a stage model; a wrapper of one model (test-time views,
#: an ensemble's mean) shows them as its own.
STAGE_ATTRIBUTES = ("INPUTS", "OPTIONAL_INPUTS", "OUTPUT", "AMP_DTYPE", "DRAWS_PER_CALL")


def show_stage_attributes(wrapper: torch.nn.Module, model: torch.nn.Module) -> None:
    """Copy `STAGE_ATTRIBUTES` that `model` has onto `wrapper`."""
    for name in STAGE_ATTRIBUTES:
        if hasattr(model, name):
            setattr(wrapper, name, getattr(model, name))


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` → CUDA when available, else CPU; `cuda` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but this machine has no CUDA GPU; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it (no overflow), fp16 otherwise."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None,
             cpu_bf16: bool = False) -> contextlib.AbstractContextManager:
    """AMP on CUDA when enabled (bf16 by default, or `dtype`). On CPU fp32, unless `cpu_bf16` (a training
    option: on a CPU with native bf16 the UNet's steps ran 1.3-1.5x as fast, bench/RESULTS.md (K));
    CPU inference stays fp32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype or amp_dtype(device))
    if enabled and cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pad_to_multiple(x: torch.Tensor, multiple: int, square: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad H and W at the bottom/right up to a multiple (and to a square when `square`).

    Reflect padding where possible, else replicate. Returns the padded tensor and the original (H, W)
    to crop back to — never truncate.
    """
    h, w = x.shape[-2:]
    if square:
        side = max(h, w) + (-max(h, w)) % multiple
        ph, pw = side - h, side - w
    else:
        ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed Python, torch CPU and CUDA RNGs for a block, restoring the caller's state afterwards.

    TerraMind draws its sampling seed from Python's `random` and its diffusion noise from torch.
    """
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    py_state = random.getstate()
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
