"""Classifier training on Ray Train: DDP workers, AdamW + cosine, label smoothing, field-simulator
augmentation, per-class precision/recall/F1 every epoch, the best epoch kept by a validation metric.

The training images travel as a Ray Dataset (sharded across workers); the validation set goes to rank 0
through the object store. `RUN/model_best.pt` is the best epoch's checkpoint; `RUN/history.json` every
epoch's metrics. DDP, the schedule and checkpoint reporting follow the template in `train/base.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from axion_ray.classify.data import ImageSet
from axion_ray.config import ClassifierConfig
from axion_ray.errors import ConfigError

BEST_FILE = "model_best.pt"


def preprocess(images: torch.Tensor, mean: list[float], std: list[float], normalize: bool) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float in [0, 1], standardised with the backbone's statistics if asked."""
    x = images.float() / 255.0
    if normalize:
        x = (x - torch.tensor(mean, device=x.device).view(1, 3, 1, 1)) / torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return x


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: np.ndarray, model_config: dict[str, Any],
                  device: torch.device | str = "cpu", batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (N, classes) of uint8 images (N, 3, H, W)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).to(device)
        x = preprocess(x, model_config["mean"], model_config["std"], model_config["normalize"])
        out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.empty((0, model_config["num_classes"]), np.float32)


def load_classifier(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained classifier checkpoint → (model in eval mode, its config)."""
    from axion_ray.classify.models import build_classifier
    from axion_ray.models.weights import load_checkpoint

    ckpt = load_checkpoint(path)
    c = ckpt.config
    if "class_names" not in c:
        raise ConfigError(f"{path} is not a classifier checkpoint (no class_names in its config)")
    model = build_classifier(c["model"], c["num_classes"], image_size=c["image_size"], mode=c["mode"],
                             state_dict=ckpt.state_dict)
    model.provenance.update(checkpoint=str(path), checkpoint_sha256=ckpt.sha256)
    return model.to(device).eval(), c


def _train_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train

    from axion_ray.classify.augment import augment_batch, field_simulator
    from axion_ray.classify.models import build_classifier, replace_head, set_mode
    from axion_ray.metrics.classification import classification_metrics
    from axion_ray.metrics.composite import rank_score
    from axion_ray.train.base import prepare_ddp, report, warmup_cosine

    cfg = ClassifierConfig(**{k: v for k, v in config["cfg"].items()})
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    if config.get("torch_threads"):
        torch.set_num_threads(config["torch_threads"])
    class_names = tuple(config["class_names"])

    if config["init_from"]:  # two-stage step (c): the binary model, a new head, only the head trains
        model, init_cfg = load_classifier(config["init_from"])
        model = replace_head(model, len(class_names))
        mode = "linear_probe"
        provenance = {**model.provenance, "init_from": config["init_from"]}
    else:
        model = build_classifier(cfg.model, len(class_names), image_size=cfg.image_size, mode=cfg.mode,
                                 weights=cfg.weights, allow_random_init=cfg.allow_random_init)
        mode = model.provenance["mode"]
        provenance = model.provenance
    set_mode(model, mode)
    model.train()
    model_config = {"model": provenance["model"], "timm_name": provenance["timm_name"], "mode": mode,
                    "num_classes": len(class_names), "class_names": list(class_names), "image_size": cfg.image_size,
                    "mean": provenance["mean"], "std": provenance["std"], "normalize": cfg.normalize}
    ddp, core = prepare_ddp(model)
    device = next(core.parameters()).device
    epochs, lr = config["epochs"], config["lr"]
    steps_per_epoch = max(1, math.ceil(config["n_train"] / world / cfg.batch_size))
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW([p for p in core.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, total, warmup_steps=steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    transform = field_simulator(cfg.augment)
    use_amp = device.type == "cuda"
    val_images, val_labels = ray.get(config["val_ref"]) if rank == 0 else (None, None)
    shard = ray.train.get_dataset_shard("train")

    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        losses = []
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, local_shuffle_buffer_size=512):
            images = augment_batch(batch["image"], transform).to(device)
            x = preprocess(images, model_config["mean"], model_config["std"], cfg.normalize)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = ddp(x)
            loss = loss_fn(logits.float(), batch["label"].long().to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan")}
        if rank != 0:
            report(metrics)
            continue
        probs = predict_proba(core, val_images, model_config, device)
        m = classification_metrics(val_labels, probs.argmax(1), class_names)
        floor_ok = "pit" not in class_names or m["per_class"]["pit"]["recall"] >= cfg.recall_floor
        metrics.update(accuracy=m["accuracy"], macro_f1=m["macro_f1"], recall_floor_met=floor_ok,
                       rank_score=rank_score(m["accuracy"], floor_ok),
                       val_loss=float(-np.log(np.clip(probs[np.arange(len(val_labels)), val_labels], 1e-12, 1)).mean()),
                       **{f"{c}_{k}": v[k] for c, v in m["per_class"].items() for k in ("precision", "recall", "f1")})
        history.append(dict(metrics))
        metrics["history_json"] = json.dumps(history)  # the run's result carries every epoch, not only the last
        report(metrics, checkpoint={"model_state_dict": {k: v.detach().cpu() for k, v in core.state_dict().items()},
                                    "config": model_config, "provenance": provenance, "epoch": epoch, "metrics": m,
                                    "train_config": config["cfg"]})


def train_classifier(train: ImageSet, val: ImageSet, out_dir: str | Path, cfg: ClassifierConfig = ClassifierConfig(),
                     *, init_from: str | Path | None = None, say: Callable[[str], None] = print,
                     callbacks: list | None = None) -> dict[str, Any]:
    """Train on `train`, pick the best epoch on `val`; writes `OUT/model_best.pt` and `OUT/history.json`.

    `init_from` (a classifier checkpoint) starts from that model with a new head for `train`'s classes
    and trains only the head — step (c) of the two-stage workflow.
    """
    import ray

    from axion_ray.distributed import init_ray, worker_cpus
    from axion_ray.train.base import best_checkpoint_file, fit_trainer

    if train.class_names != val.class_names:
        raise ConfigError(f"train and val classes differ: {train.class_names} vs {val.class_names}")
    cfg.validate(train.class_names)
    for label, n in zip(train.class_names, np.bincount(train.labels, minlength=len(train.class_names))):
        if n == 0:
            raise ConfigError(f"no training images of class {label!r}")
    if init_from is None:  # missing weights are a user error here, not a crash inside a Ray worker
        from axion_ray.classify.models import resolve_model_name
        from axion_ray.models.weights import resolve_weights

        resolve_weights([resolve_model_name(cfg.model)[0]], cfg.weights, cfg.allow_random_init)
    elif not Path(init_from).is_file():
        raise ConfigError(f"{init_from} does not exist")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(None)
    cpus_each = worker_cpus(cfg.cpus_per_worker, cfg.use_gpu, cfg.workers)
    ds = ray.data.from_items([{"image": img, "label": int(lab)} for img, lab in zip(train.images, train.labels)])
    head_only = init_from is not None
    loop_config = {
        "cfg": dataclasses.asdict(cfg), "class_names": list(train.class_names), "n_train": len(train),
        "val_ref": ray.put((val.images, val.labels)), "init_from": str(Path(init_from).resolve()) if init_from else None,
        "epochs": cfg.head_epochs if head_only else cfg.epochs, "lr": cfg.head_lr if head_only else cfg.lr,
        "torch_threads": None if cfg.use_gpu else max(1, int(round(cpus_each))),
    }
    say(f"training {cfg.model} ({'head only' if head_only else cfg.mode or 'its preset mode'}) on {len(train)} images "
        f"({', '.join(train.class_names)}), {loop_config['epochs']} epochs, {cfg.workers} worker(s)")
    result = fit_trainer(_train_loop, loop_config, name="classifier", storage_path=out / "ray", workers=cfg.workers,
                         use_gpu=cfg.use_gpu, worker_cpus=cpus_each, score_attribute=cfg.select_metric, keep=1,
                         callbacks=callbacks, datasets={"train": ds})
    history = json.loads(result.metrics.get("history_json", "[]"))
    best_file, best_metrics = best_checkpoint_file(result)
    best_metrics = {k: v for k, v in best_metrics.items() if k != "history_json"}
    tmp = out / f".{BEST_FILE}.partial"
    shutil.copyfile(best_file, tmp)
    tmp.replace(out / BEST_FILE)
    summary = {"best": best_metrics, "best_epoch": int(best_metrics["epoch"]), "checkpoint": str(out / BEST_FILE),
               "history": history, "skipped_images": train.skipped + val.skipped}
    (out / "history.json").write_text(json.dumps(summary, indent=2, default=str))
    for m in history:
        say(f"  epoch {int(m['epoch'])}: loss {m['train_loss']:.4f}, val accuracy {m.get('accuracy', float('nan')):.4f}, "
            f"macro F1 {m.get('macro_f1', float('nan')):.4f}")
    return summary
