"""The stage actor: one class serves every stage of the chain in a Ray Data actor pool.

For each batch it picks the rows its stage must run (`run_<k>`), checks their inputs (a bad tile fails
with a reason and the rest of the batch goes on), runs the model through `StageRunner` (AMP, OOM split,
CPU fallback) and adds the result columns that `distributed.write_tile_store` writes
(`distributed/columns.py`). What the stage reads and writes comes from its `StageSpec`. Stage 1 also
passes its full 12-band S2L2A on to Stage 3.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from axion_ray.distributed.columns import ROW_DONE, ROW_FAILED, ROW_NO_DATA, ROW_NOT_RUN
from axion_ray.models.registry import STAGES, stage_spec
from axion_ray.store.validity import fill_invalid, valid_pixels

#: Rows carry every image a stage may read plus the per-tile scalars.
_ROW_INPUTS = tuple(dict.fromkeys(n for spec in STAGES.values()
                                  for n in spec.model_inputs + spec.optional_inputs))


def s1_problem(tile: np.ndarray) -> str | None:
    """Why an S1 tile cannot be used, or None. NaN pixels are no-data (store/validity.py), not a problem;
    infinities are corrupt values."""
    if np.isinf(tile).any():
        return f"s1 has {int(np.isinf(tile).sum())} infinite values"
    if not np.any(np.nan_to_num(tile)):
        return "s1 is all zeros (no data)"
    return None


def optical_problem(tile: np.ndarray, name: str) -> str | None:
    """Why an optical input tile cannot be used, or None."""
    if np.isinf(tile).any():
        return f"{name} has {int(np.isinf(tile).sum())} infinite values"
    if not np.isfinite(tile).any():
        return f"{name} not produced (run its stage first)"
    return None


class StageActor:
    """Callable class for `Dataset.map_batches(..., compute=ActorPoolStrategy(...))`."""

    def __init__(self, stage: int, build_kwargs: dict[str, Any], device: str, amp: bool, num_threads: int,
                 carry_s2l2a: bool, tracker: Any = None, batch_size: int = 16):
        entered = time.time()
        import ray
        import torch

        from axion_ray.models import build_stage
        from axion_ray.models.common import resolve_device
        from axion_ray.models.runner import StageRunner

        torch.set_num_threads(max(1, int(num_threads)))
        self.stage = stage
        self.batch_size = max(1, int(batch_size))  # tiles per model call; a block (whole shards) may hold more
        self.spec = stage_spec(stage)
        self.carry_s2l2a = carry_s2l2a and stage == 1
        if device.startswith("cuda") and not torch.cuda.is_available():
            # Scheduled on a GPU resource with no usable CUDA device (a GPU declared to Ray, a broken
            # driver): run on the CPU; every row's device column says so, and the run summary with it.
            device = "cpu"
        target = resolve_device(device)
        imported = time.time()
        model = build_stage(stage, device=str(target), **build_kwargs)
        self.runner = StageRunner(model, target, amp=amp, method="generate" if self.carry_s2l2a else "forward")
        self.node_id = ray.get_runtime_context().get_node_id()  # per-node tile counts in the run summary
        if tracker is not None:  # lets operators (and tests) find which actor serves which stage
            # with its start-up: when the constructor began, imports, model build, ready (run summary)
            tracker.register_actor.remote(stage, ray.get_runtime_context().current_actor,
                                          {"entered": entered, "imports_s": imported - entered,
                                           "build_s": time.time() - imported, "ready": time.time()},
                                          node=self.node_id)

    def _inputs_ok(self, batch: dict[str, np.ndarray], rows: np.ndarray) -> dict[int, tuple[int, str]]:
        """Row index → (ROW_FAILED or ROW_NO_DATA, reason), for the rows this stage would run."""
        problems: dict[int, tuple[int, str]] = {}
        upstream = self.stage - 1
        optical = self.spec.optical_input
        for i in np.flatnonzero(rows):
            if reason := self._read_error(batch, i):
                problems[i] = ROW_FAILED, reason
                continue
            if f"status_{upstream}" in batch and batch[f"status_{upstream}"][i] == ROW_FAILED:
                problems[i] = ROW_FAILED, f"stage {upstream} failed: {batch[f'reason_{upstream}'][i]}"
                continue
            if f"status_{upstream}" in batch and batch[f"status_{upstream}"][i] == ROW_NO_DATA:
                problems[i] = ROW_NO_DATA, f"stage {upstream}: no data"
                continue
            if self.spec.reads_s1 and (reason := s1_problem(batch["s1"][i])):
                problems[i] = ROW_FAILED, reason
            elif optical and (reason := optical_problem(batch[optical][i], optical)):
                problems[i] = ROW_FAILED, reason
            elif not valid_pixels(*(np.asarray(batch[a])[i:i + 1] for a in self.spec.inputs)).any():
                problems[i] = ROW_NO_DATA, "no valid pixel"
        return problems

    def _read_error(self, batch: dict[str, np.ndarray], i: int) -> str:
        """Why one of this row's inputs could not be read from the store ("" if none): an input an
        upstream stage produced in this run is fresh, whatever the store held."""
        upstream = STAGES.get(self.stage - 1)
        for name in self.spec.inputs:
            error = str(batch.get(f"read_error_{name}", [""] * (i + 1))[i])
            fresh = upstream is not None and name == upstream.output and \
                batch.get(f"status_{upstream.stage}", np.zeros(i + 1))[i] == ROW_DONE
            if error and not fresh:
                return error
        return ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from axion_ray.models.s2l2a import s2l2a_dn_to_opt

        k, output = self.stage, self.spec.output
        n = len(batch["tile"])
        rows = np.asarray(batch[f"run_{k}"], dtype=bool).copy()
        status = np.full(n, ROW_NOT_RUN, np.uint8)
        reasons = np.array([""] * n, dtype=object)
        problems = self._inputs_ok(batch, rows)
        for i, (code, reason) in problems.items():
            status[i], reasons[i], rows[i] = code, reason, False
        h, w = batch[self.spec.inputs[0]].shape[-2:]
        out = batch.get(output)
        out = np.full((n, 4, h, w), np.nan, np.float32) if out is None else np.array(out, dtype=np.float32)
        ms = np.full(n, np.nan, np.float32)
        fallbacks_before = self.runner.stats.cpu_fallback_tiles
        if rows.any():
            idx = np.flatnonzero(rows)
            inputs = {name: np.asarray(batch[name])[idx] for name in _ROW_INPUTS if name in batch}
            # Invalid pixels (NaN) are filled for the model and are NaN again in its output.
            valid = valid_pixels(*(inputs[a] for a in self.spec.inputs))
            for name in self.spec.inputs:
                inputs[name] = fill_invalid(inputs[name], valid)
            start = time.perf_counter()
            result = np.concatenate([self.runner({k: v[a:a + self.batch_size] for k, v in inputs.items()})
                                     for a in range(0, idx.size, self.batch_size)])
            result = np.where(valid[:, None], result, np.nan).astype(np.float32)
            elapsed_ms = 1000.0 * (time.perf_counter() - start) / idx.size
            if self.carry_s2l2a:
                import torch

                full = np.full((n, 12, h, w), np.nan, np.float32)
                full[idx] = result
                batch["s2l2a_v1"] = full
                result = s2l2a_dn_to_opt(torch.from_numpy(result)).numpy()
            out[idx] = result
            status[idx] = ROW_DONE
            ms[idx] = elapsed_ms
        elif self.carry_s2l2a:
            batch["s2l2a_v1"] = np.full((n, 12, h, w), np.nan, np.float32)
        batch[output] = out
        batch[f"status_{k}"] = status
        batch[f"reason_{k}"] = reasons.astype(str)
        batch[f"ms_{k}"] = ms
        batch[f"device_{k}"] = np.array([str(self.runner.device) if s else "" for s in status])
        batch[f"node_{k}"] = np.array([self.node_id if s else "" for s in status])
        fallback = np.zeros(n, np.int32)
        if self.runner.stats.cpu_fallback_tiles > fallbacks_before and rows.any():
            fallback[np.flatnonzero(rows)[0]] = self.runner.stats.cpu_fallback_tiles - fallbacks_before
        batch[f"fallback_{k}"] = fallback
        return batch
