"""The training template every Ray Train run here follows (torchgeo's `BaseTask` habit).

Stage training (`train/loop.py`) and classifier training (`classify/train.py`) differ in their model,
objective and validation; what they share lives here once:

- driver side: `fit_trainer` — a `TorchTrainer` whose checkpoints are kept by a validation score;
- worker side: `prepare_ddp` (DDP wrap and unwrap), `gather_to_first` (each worker's share of the
  validation to rank 0), `warmup_cosine` (the LR schedule),
  `ShardBatches` (an epoch's batches from the worker's Ray Data shard), `report` (metrics, with a
  checkpoint file when given one) and `restored_checkpoint` (what Ray Train restarted a worker group
  from, read through the one checkpoint loader).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"


def fit_trainer(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], *, name: str,
                storage_path: str | Path, workers: int | tuple[int, int], use_gpu: bool, worker_cpus: float,
                score_attribute: str, keep: int, datasets: dict[str, Any], max_failures: int = 0,
                callbacks: list | None = None) -> Any:
    """Run `loop` on Ray Train workers (DDP); keep the `keep` best checkpoints by `score_attribute`.

    `workers` is a count, or (min, max) for an elastic run; `max_failures` restarts a failed worker
    group from the last checkpoint. Returns Ray Train's `Result`.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": worker_cpus}),
        run_config=RunConfig(
            name=name, storage_path=str(storage_path), callbacks=callbacks,
            checkpoint_config=CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute=score_attribute,
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=max_failures)),
        datasets=datasets)
    return trainer.fit()


def prepare_ddp(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the model Ray Train prepared — DDP when there are several workers —, the plain model inside it)."""
    import ray.train.torch

    prepared = ray.train.torch.prepare_model(model)
    return prepared, (prepared.module if hasattr(prepared, "module") else prepared)


def gather_to_first() -> Callable[[Any], list[Any] | None] | None:
    """Where the workers form a process group: a function every worker calls with a Python object
    and the first (rank 0) gets all of them back, in rank order (the others get None); else None.

    Over a gloo group of its own, as detectron2's `comm` does: NCCL moves objects only through each
    rank's own GPU, and what is gathered here (metric sums) lives on the CPU."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None

    def gather(obj: Any) -> list[Any] | None:
        first = dist.get_rank() == 0
        received = [None] * dist.get_world_size() if first else None
        dist.gather_object(obj, received, dst=0, group=group)
        return received

    return gather


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    total, warmup = max(1, total_steps), max(1, warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


class ShardBatches:
    """A worker's training batches, one epoch at a time, from its Ray Data shard.

    A large training set streams (`iter_torch_batches`, a local shuffle buffer). A small one — the
    driver materialised it (`in_memory`) — is read from the shard once and kept: every epoch is then
    `steps_per_epoch` full batches drawn from a running permutation. Why: Ray Data starts each epoch's
    split anew (~1.5 s here, every epoch), and a small shard's epoch ends in a runt batch (18 tiles:
    16 + 2). Measured on the demo's 36 tiles: half the steps were 2-tile steps and half the wall time
    was epoch starts. Every rank also takes exactly `steps_per_epoch` steps, which DDP needs.

    A pixel-wise model (`rows`, with `rows_per_step`) draws each step's batch from a table of rows the
    cached tiles are turned into once (`RegressTask.pixel_rows`: pixels of every tile), not from tiles.

    A convolutional model (`crop`, a side in pixels smaller than the tiles') gets each step's pixels as
    random `crop`-px squares from proportionally more tiles: the same pixels a step, from 4x as many
    places when the crop is half the tile. Why: a step of whole tiles repeats each tile's land-cover mix,
    and a small training set's gradient then averages too few scenes (bench/stage1_batches.py, Stage 1:
    NDVI RMSE 0.0759 on whole tiles, 0.0689 on crops, same time).
    """

    def __init__(self, shard: Any, batch_size: int, steps_per_epoch: int, *, in_memory: bool, seed: int = 0,
                 rows: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None,
                 rows_per_step: int | None = None, crop: int | None = None):
        self.shard, self.batch_size, self.steps_per_epoch = shard, batch_size, steps_per_epoch
        self.in_memory = in_memory
        self._rng = np.random.default_rng(seed)
        self._cache: dict[str, np.ndarray] | None = None
        self._order = np.empty(0, dtype=np.int64)
        self._to_rows, self._rows_per_step = rows, rows_per_step
        self.crop = crop if in_memory and rows is None and crop else None

    def epoch(self, device: torch.device, *, shuffle_buffer: int = 256) -> Iterator[dict[str, torch.Tensor]]:
        if not self.in_memory:
            yield from self.shard.iter_torch_batches(batch_size=self.batch_size,
                                                     local_shuffle_buffer_size=shuffle_buffer, device=str(device))
            return
        cache = self._rows()
        n = len(next(iter(cache.values()))) if cache else 0
        if n == 0:
            return
        height, width = next((v.shape[-2:] for v in cache.values() if v.ndim == 4), (0, 0))
        crop = self.crop if self.crop and self.crop < min(height, width) else None
        size = self._rows_per_step or self.batch_size
        size = size * height * width // (crop * crop) if crop else min(size, n)  # the same pixels a step
        for _ in range(self.steps_per_epoch):
            while self._order.size < size:  # the next pass over the shard, in a new order
                self._order = np.concatenate([self._order, self._rng.permutation(n)])
            idx, self._order = self._order[:size], self._order[size:]
            batch = self._crops(cache, idx, crop, height, width) if crop else {k: v[idx] for k, v in cache.items()}
            yield {k: torch.from_numpy(v).to(device) for k, v in batch.items()}

    def _crops(self, cache: dict[str, np.ndarray], idx: np.ndarray, crop: int, height: int, width: int
               ) -> dict[str, np.ndarray]:
        """One random `crop`-px square of each tile in `idx`, the same square of every image array;
        per-tile values (month, biome) as they are."""
        ys, xs = self._rng.integers(0, height - crop + 1, idx.size), self._rng.integers(0, width - crop + 1, idx.size)
        return {k: np.stack([v[i, :, y:y + crop, x:x + crop] for i, y, x in zip(idx, ys, xs)]) if v.ndim == 4
                else v[idx] for k, v in cache.items()}

    def _rows(self) -> dict[str, np.ndarray]:
        if self._cache is None:
            blocks = list(self.shard.iter_batches(batch_size=None, batch_format="numpy"))
            self._cache = {k: np.concatenate([np.asarray(b[k]) for b in blocks]) for k in blocks[0]} if blocks else {}
            if self._to_rows is not None and self._cache:
                self._cache = self._to_rows(self._cache)
        return self._cache


def report(metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
    """Report `metrics` to Ray Train, with `checkpoint` saved as the checkpoint's `checkpoint.pt`."""
    import ray.train

    if checkpoint is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(checkpoint, Path(d) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def restored_checkpoint() -> dict[str, Any] | None:
    """The checkpoint Ray Train restarted this worker group from (state dict, config and the rest of
    what `report` saved), or None on a fresh start."""
    import ray.train

    from axion_ray.models.weights import load_checkpoint

    resumed = ray.train.get_checkpoint()
    if resumed is None:
        return None
    with resumed.as_directory() as d:
        ckpt = load_checkpoint(Path(d) / CHECKPOINT_FILE, digest=False)
    return {"model_state_dict": ckpt.state_dict, "config": ckpt.config, **ckpt.meta}


def best_checkpoint_file(result: Any) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file and metrics of the best checkpoint Ray Train kept."""
    if not result.best_checkpoints:
        raise RuntimeError("training reported no checkpoint")
    ckpt, metrics = result.best_checkpoints[0]
    return Path(ckpt.path) / CHECKPOINT_FILE, metrics
