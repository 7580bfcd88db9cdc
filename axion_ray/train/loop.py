"""The per-worker Ray Train loop for Stage 2: DDP, AMP on GPU, validation with the composite score.

Every `val_every_steps` steps (and at the end) rank 0 measures the full metric set on the validation
store — the refiner against the Stage 1 baseline and the truth — and reports it with a checkpoint
(ARCHITECTURE §4 `.pt`, plus optimizer state so a restarted worker group resumes where it was).
Other ranks report the same step without a checkpoint.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"


def model_config(cfg: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """What `build_stage` needs to rebuild this model from a checkpoint."""
    from axion_ray.models.presets import PRESETS

    spec = PRESETS[cfg["preset"]]
    lora = None
    if cfg["lora_rank"] > 0:
        lora = {"rank": cfg["lora_rank"], "alpha": cfg["lora_alpha"], "dropout": 0.05,
                "targets": ["qkv", "proj", "fc1", "fc2"], "trainable": ["head"]}
    return {"stage": 2, "preset": cfg["preset"], "prithvi": model.provenance["model"], "head_dim": spec.head_dim,
            "head_blocks": spec.head_blocks, "lora": lora}


class Validator:
    """Holds the validation tiles and the Stage 1 baseline figures; scores a model on them."""

    def __init__(self, store_path: str, max_tiles: int, batch_size: int = 32):
        from axion_ray.metrics.spectral import SpectralAccumulator
        from axion_ray.store.tile_store import TileStatus, TileStore

        store = TileStore.open(store_path, mode="r")
        tiles = np.flatnonzero(store.status("opt_v1") == TileStatus.DONE)[:max_tiles]
        self.opt_v1 = store.read("opt_v1", tiles)
        self.truth = store.read("s2_truth", tiles)
        meta = store.tile_meta(tiles)
        self.month, self.biome = meta["month"].astype(np.int64), meta["biome_code"].astype(np.int64)
        self.batch_size = batch_size
        acc = SpectralAccumulator()
        acc.update(self.opt_v1, self.truth)
        self.baseline = acc.compute()

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
        from axion_ray.metrics.composite import composite_score
        from axion_ray.metrics.geometry import GeometryAccumulator
        from axion_ray.metrics.spectral import SpectralAccumulator

        was_training = model.training
        model.eval()
        spectral, geometry = SpectralAccumulator(), GeometryAccumulator()
        for start in range(0, len(self.opt_v1), self.batch_size):
            part = slice(start, start + self.batch_size)
            pred = model(torch.from_numpy(self.opt_v1[part]).to(device), torch.from_numpy(self.month[part]).to(device),
                         torch.from_numpy(self.biome[part]).to(device)).float().cpu().numpy()
            spectral.update(pred, self.truth[part])
            geometry.update(pred, self.opt_v1[part])
        model.train(was_training)
        pred_m, geo = spectral.compute(), geometry.compute()
        comp = composite_score(pred_m, self.baseline, geo)
        return {"pred": pred_m, "baseline": self.baseline, "geometry": geo, **comp.to_dict()}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from axion_ray.models import LoraSettings, apply_lora, build_stage
    from axion_ray.models.common import autocast
    from axion_ray.train.losses import stage2_loss

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(config["seed"] + rank)
    if config.get("torch_threads"):
        torch.set_num_threads(config["torch_threads"])

    model = build_stage(2, config["preset"], weights=config["weights"], allow_random_init=config["allow_random_init"])
    provenance = model.provenance
    if config["lora_rank"] > 0:
        model = apply_lora(model, LoraSettings(rank=config["lora_rank"], alpha=config["lora_alpha"]))
    model.train()
    ddp_model = ray.train.torch.prepare_model(model)
    core = ddp_model.module if hasattr(ddp_model, "module") else ddp_model
    device = next(core.parameters()).device
    params = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config["lr"], weight_decay=config["weight_decay"])
    total_steps = max(1, config["epochs"] * config["steps_per_epoch"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")

    step, start_epoch, resumed_from = 0, 0, None
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        core.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
        scheduler.load_state_dict(state["scheduler_state_dict"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        resumed_from = step

    validator = Validator(config["val_store"], config["max_val_tiles"]) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    weights = {k: config[k] for k in ("w_l1", "w_sam", "w_ndvi", "w_evi", "w_edge")}
    last_loss: dict[str, float] = {}

    def report(epoch: int) -> None:
        metrics: dict[str, Any] = {"step": step, "epoch": epoch, **{f"loss_{k}": v for k, v in last_loss.items()}}
        if rank != 0:
            ray.train.report(metrics)
            return
        result = validator(core, device)
        metrics.update({**result["pred"], **result["geometry"], "composite_score": result["composite_score"],
                        "constraints_pass": result["constraints_pass"]})
        with tempfile.TemporaryDirectory() as d:
            torch.save({
                "model_state_dict": {k: v.detach().cpu() for k, v in core.state_dict().items()},
                "optimizer_state_dict": optimizer.state_dict(), "scheduler_state_dict": scheduler.state_dict(),
                "config": model_config(config, core), "provenance": provenance,
                "step": step, "epoch": epoch, "metrics": result, "composite_score": result["composite_score"],
                "resumed_from_step": resumed_from,
            }, Path(d) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    # After a restart, skip the part of the interrupted epoch that the checkpoint already covers.
    skip = max(0, step - start_epoch * config["steps_per_epoch"])
    for epoch in range(start_epoch, config["epochs"]):
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"], local_shuffle_buffer_size=256,
                                              device=str(device)):
            if skip:
                skip -= 1
                continue
            opt_v1, truth = batch["opt_v1"].float(), batch["s2_truth"].float()
            with autocast(device, True):
                pred = ddp_model(opt_v1, batch["month"].long(), batch["biome_code"].long())
            loss, last_loss = stage2_loss(pred.float(), truth, opt_v1, **weights)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if step % config["val_every_steps"] == 0:
                report(epoch)
            if resumed is None and config.get("fault_exit_at_step") == step and rank == config["workers"] - 1:
                os._exit(1)  # fault injection (tests, bench/faults): a worker process dies mid-run
    if step % config["val_every_steps"] != 0 or step == 0:
        report(config["epochs"])
