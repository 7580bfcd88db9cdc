"""Training commands: `train stage1|stage2|stage3` on Ray Train, and `select` (the best checkpoint)."""

from __future__ import annotations

import argparse

from axion_ray.cli.options import EXIT_OK, add_model_options, config_from_args, say, warn


def cmd_train(args: argparse.Namespace) -> int:
    from axion_ray.config import TrainConfig
    from axion_ray.train import train_stage

    cfg = config_from_args(TrainConfig, args, stage=int(args.stage.removeprefix("stage")), use_gpu=args.gpu,
                           val_every_steps=args.val_every)
    summary = train_stage(args.train, args.val, args.out, cfg, say=say)
    for c in summary["checkpoints"]:
        print(f"step {c['step']}: composite {c['composite_score']:+.4f} ({'PASS' if c['constraints_pass'] else 'FAIL'}) "
              f"ndvi_rmse={c['ndvi_rmse']:.4f} evi_rmse={c['evi_rmse']:.4f} sam_rad={c['sam_rad']:.4f}")
    print(f"run directory: {summary['run_dir']} (next: axion-ray select {args.out} --export best.pt)")
    return EXIT_OK


def cmd_select(args: argparse.Namespace) -> int:
    from axion_ray.train.select import select_and_export

    meta = select_and_export(args.run, args.export, fp16=args.fp16, warn=warn)
    best = meta["selected"]
    print(f"selected step {best['step']} (composite {best['composite_score']:+.4f}, "
          f"constraints {'PASS' if best['constraints_pass'] else 'FAIL'}) → {args.export}")
    return EXIT_OK


def add_training_data_options(p: argparse.ArgumentParser) -> None:
    """The stores a stage trains and validates on (train and tune stage2 alike)."""
    p.add_argument("--train", required=True, nargs="+",
                   help="training store(s) (s1, opt_v1[, opt_v2] + s2_truth); several AOIs are pooled")
    p.add_argument("--val", required=True, help="validation store (same arrays)")


def add_schedule_options(p: argparse.ArgumentParser) -> None:
    """How long a stage trains and how often it is validated (train and tune stage2 alike)."""
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--val-every", type=int, help="validate and checkpoint every N steps")
    p.add_argument("--max-val-tiles", type=int)


def add_train_parsers(sub) -> None:
    from axion_ray.models.registry import STAGES

    p = sub.add_parser("train", help="train a stage on Ray Train (DDP, LoRA), keeping checkpoints by composite score")
    p.add_argument("stage", choices=[spec.name for spec in STAGES.values()],
                   help="stage2: the Prithvi refiner; stage1/stage3: LoRA on TerraMind (token objective)")
    add_training_data_options(p)
    p.add_argument("--out", required=True, help="run directory")
    add_model_options(p, sampling=False)
    p.add_argument("--workers", type=int)
    p.add_argument("--min-workers", type=int, help="elastic: start with as few as this many workers")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker")
    add_schedule_options(p)
    p.add_argument("--lr", type=float)
    p.add_argument("--lora-rank", type=int, help="0 = full fine-tuning (stage 2); TerraMind stages use rank 8 when 0")
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--timesteps", type=int, help="TerraMind diffusion steps used in validation")
    p.add_argument("--condition", choices=["opt_v1", "opt_v2"], help="stage 3: the optical array it grounds")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("select", help="export the best checkpoint of a run (composite score, hard constraints)")
    p.add_argument("run")
    p.add_argument("--export", required=True, help="OUT.pt")
    p.add_argument("--fp16", action="store_true", help="store weights in fp16 (quantization_info)")
    p.set_defaults(func=cmd_select)
