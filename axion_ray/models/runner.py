"""Running a stage model on NumPy batches in store units: device, AMP, OOM handling.

The pipeline's actors call a `StageRunner`; so can a user's own loop. On CUDA out-of-memory the batch
is split in halves and retried; a single tile that still does not fit runs on the CPU (a second copy of
the model is made there once), and every such fallback is counted. On the CPU a large batch runs in
parts of at most `CPU_CALL_PIXELS` pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from axion_ray.models.common import autocast

# Inputs given per tile as scalars (B,), everything else is an image (B, C, H, W).
_INTEGER_INPUTS = ("month", "biome_code")

#: On the CPU one model call holds at most this many pixels (tiles x height x width); a larger batch
#: runs in parts, with the same result. glibc serves every buffer over 32 MiB with a fresh `mmap` and
#: unmaps it when freed, so an activation that size is page-faulted in again on every call: at 64 tiles
#: of 64 px the refiner's 32-channel maps are 33.5 MB, and more than half of its CPU time went to the
#: kernel (8.5 M page faults in 288 calls). Measured here, model alone, two calls on one thread each
#: (bench/RESULTS.md): the refiner 235 tiles/s at 64 tiles per call, 412 at 16, 385 at 8; the
#: regression Stage 1 162, 320, 294; 224 px tiles fastest one per call. A GPU batch is not cut (CUDA's
#: caching allocator keeps its buffers), nor is a model that draws its noise per call (`DRAWS_PER_CALL`).
CPU_CALL_PIXELS = 16 * 64 * 64


def cpu_call_tiles(height: int, width: int) -> int:
    """Tiles of `height` x `width` px one CPU model call holds (`CPU_CALL_PIXELS`, at least one)."""
    return max(1, CPU_CALL_PIXELS // (height * width))


@dataclass
class RunnerStats:
    tiles: int = 0
    oom_splits: int = 0
    cpu_fallback_tiles: int = 0
    model_seconds: float = 0.0
    devices: set[str] = field(default_factory=set)


class StageRunner:
    """`runner(inputs)` → output batch as float32 NumPy ((B, 4, H, W), or (B, 12, H, W) for `generate`)."""

    def __init__(self, model: nn.Module, device: torch.device, amp: bool = True, method: str = "forward",
                 amp_dtype: torch.dtype | None = None):
        self.model = model.to(device).eval()
        # Per-stage default measured on an H100 (bench/RESULTS.md): fp16 for the conv refiner, bf16 for TerraMind.
        self.amp_dtype = amp_dtype or getattr(model, "AMP_DTYPE", None)
        self.method = method  # "generate" for a TerraMind stage whose full 12-band output is wanted
        self.device = device
        self.amp = bool(amp) and device.type == "cuda"
        self.stats = RunnerStats()
        self._stats_lock = threading.Lock()  # an actor may run several calls at once (pipeline/plan.py)
        self._cpu_model: nn.Module | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.model.INPUTS)

    def _tensors(self, inputs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
        names = list(self.model.INPUTS) + [n for n in getattr(self.model, "OPTIONAL_INPUTS", ()) if n in inputs]
        out = {}
        for name in names:
            array = np.asarray(inputs[name])
            dtype = torch.long if name in _INTEGER_INPUTS else torch.float32
            out[name] = torch.as_tensor(array).to(device=device, dtype=dtype, non_blocking=True)
        return out

    def _run(self, model: nn.Module, inputs: dict[str, np.ndarray], device: torch.device, amp: bool) -> np.ndarray:
        call = model if self.method == "forward" else getattr(model, self.method)
        with torch.inference_mode(), autocast(device, amp, self.amp_dtype):
            out = call(**self._tensors(inputs, device))
        self.stats.devices.add(str(device))
        return out.float().cpu().numpy()

    def _cpu(self) -> nn.Module:
        if self._cpu_model is None:
            import copy

            self._cpu_model = copy.deepcopy(self.model).to("cpu").eval()
        return self._cpu_model

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import time

        start = time.perf_counter()
        n = len(next(iter(inputs.values())))
        part = self._cpu_call_tiles(inputs, n)
        if part < n:
            out = np.concatenate([self._run_or_split({k: v[a:a + part] for k, v in inputs.items()}, min(part, n - a))
                                  for a in range(0, n, part)])
        else:
            out = self._run_or_split(inputs, n)
        with self._stats_lock:
            self.stats.tiles += n
            self.stats.model_seconds += time.perf_counter() - start
        return out

    def _cpu_call_tiles(self, inputs: dict[str, np.ndarray], n: int) -> int:
        """Tiles per model call: all `n`, except on the CPU where a call holds at most `CPU_CALL_PIXELS`."""
        if self.device.type != "cpu" or getattr(self.model, "DRAWS_PER_CALL", False):
            return n
        height, width = max((np.shape(v)[-2:] for v in inputs.values() if np.ndim(v) == 4),
                            key=lambda hw: hw[0] * hw[1], default=(1, 1))
        return cpu_call_tiles(height, width)

    def _run_or_split(self, inputs: dict[str, np.ndarray], n: int) -> np.ndarray:
        try:
            return self._run(self.model, inputs, self.device, self.amp)
        except torch.OutOfMemoryError:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if n > 1:
                self.stats.oom_splits += 1
                half = n // 2
                first = self._run_or_split({k: v[:half] for k, v in inputs.items()}, half)
                second = self._run_or_split({k: v[half:] for k, v in inputs.items()}, n - half)
                return np.concatenate([first, second])
            self.stats.cpu_fallback_tiles += 1
            return self._run(self._cpu(), inputs, torch.device("cpu"), amp=False)
