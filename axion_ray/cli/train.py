"""Training commands: `train stage1|stage2|stage3` on Ray Train, and `select` (the best checkpoint)."""

from __future__ import annotations

import argparse

from axion_ray.cli.options import (
    EXIT_OK,
    add_model_options,
    add_overwrite_option,
    checked_output,
    config_from_args,
    int_list,
    say,
    warn,
)
from axion_ray.errors import ConfigError


def cmd_train(args: argparse.Namespace) -> int:
    from axion_ray.config import TrainConfig
    from axion_ray.train import train_stage

    if args.stage == "chain":
        return cmd_train_chain(args)
    if args.stage3_encoder is not None:
        raise ConfigError("--stage3-encoder is the chain's; a single stage takes --encoder")
    if args.stage2_kind is not None:
        raise ConfigError("--stage2-kind is the chain's; a single stage takes --kind")
    if args.cpu_bf16_stages is not None:
        raise ConfigError("--cpu-bf16-stages is the chain's; a single stage takes --cpu-bf16")
    if args.holdout_fraction is not None:
        raise ConfigError("--holdout-fraction is the chain's: a single stage trains on every --train store")
    if args.average_top_k is not None:
        raise ConfigError("--average-top-k is a selection option: pass it to `axion-ray select` after training")
    if args.stage1_members is not None:
        raise ConfigError("--stage1-members is the chain's: a single stage trains one model")
    if len(args.val) > 1:
        raise ConfigError("a single stage validates on one --val store; several are the chain's (train chain "
                          "--val A B … selects every stage on all of them)")
    cfg = config_from_args(TrainConfig, args, stage=int(args.stage.removeprefix("stage")), use_gpu=args.gpu,
                           val_every_steps=args.val_every)
    summary = train_stage(args.train, args.val[0], args.out, cfg, say=say)
    for c in summary["checkpoints"]:
        print(f"step {c['step']}: composite {c['composite_score']:+.4f} ({'PASS' if c['constraints_pass'] else 'FAIL'}) "
              f"ndvi_rmse={c['ndvi_rmse']:.4f} evi_rmse={c['evi_rmse']:.4f} sam_rad={c['sam_rad']:.4f}")
    print(f"run directory: {summary['run_dir']} (next: axion-ray select {args.out} --export best.pt)")
    return EXIT_OK


def cmd_train_chain(args: argparse.Namespace) -> int:
    from axion_ray.train.chain import ChainConfig, train_chain

    if args.kind == "generate" or args.condition is not None:
        raise ConfigError("train chain trains the regression kind of stages 1 and 3 on the chain's own outputs: "
                          "--kind generate and --condition do not apply")
    if args.cpu_bf16:
        raise ConfigError("train chain takes --cpu-bf16-stages (e.g. 1), not --cpu-bf16")
    chain = config_from_args(ChainConfig, args, use_gpu=args.gpu, val_every_steps=args.val_every)
    summary = train_chain(args.train, args.val, args.out, chain, say=say)
    print(summary["line"])
    print(f"run directory: {summary['run_dir']} (report: {summary['report']})")
    return EXIT_OK


def cmd_select(args: argparse.Namespace) -> int:
    from axion_ray.config import SelectConfig
    from axion_ray.train.select import select_and_export, selected_label

    checked_output(args.export, (args.run,), overwrite=args.overwrite, what="export")
    meta = select_and_export(args.run, args.export, fp16=args.fp16, cfg=config_from_args(SelectConfig, args), warn=warn)
    best = meta["selected"]
    print(f"selected {selected_label(best)} (composite {best['composite_score']:+.4f}, "
          f"constraints {'PASS' if best['constraints_pass'] else 'FAIL'}) → {args.export}")
    return EXIT_OK


def add_regression_options(p: argparse.ArgumentParser) -> None:
    from axion_ray.models.presets import ENCODERS

    p.add_argument("--encoder", choices=list(ENCODERS),
                   help="regression stages: TerraMind encoder + UNet, the UNet alone, or (Stage 3) the per-pixel "
                        "calibrator (default: TerraMind's where its published file is on disk, else the UNet for "
                        "Stage 1 and the calibrator for Stage 3)")
    p.add_argument("--width", type=int, help="regression stages: UNet width")
    p.add_argument("--crop", type=int, help="regression stages with the UNet alone: train on random squares of this "
                                            "side, from more tiles a step (default 32; 0: whole tiles)")


def add_training_data_options(p: argparse.ArgumentParser, several_val: bool = False) -> None:
    """The stores a stage trains and validates on (train and tune stage2 alike); `several_val`: `train`,
    whose chain selects on several validation AOIs pooled."""
    p.add_argument("--train", required=True, nargs="+",
                   help="training store(s) (s1, opt_v1[, opt_v2] + s2_truth); several AOIs are pooled")
    if several_val:
        p.add_argument("--val", required=True, nargs="+",
                       help="validation store (same arrays); chain: one or several AOIs, pooled, on which every "
                            "stage is selected")
    else:
        p.add_argument("--val", required=True, help="validation store (same arrays)")


def add_schedule_options(p: argparse.ArgumentParser) -> None:
    """How long a stage trains and how often it is validated (train and tune stage2 alike)."""
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--val-every", type=int, help="validate and checkpoint every N steps")
    p.add_argument("--max-val-tiles", type=int)


def add_average_option(p: argparse.ArgumentParser) -> None:
    from axion_ray.config import SelectConfig

    p.add_argument("--average-top-k", type=int, metavar="K",
                   help="also score the mean weights of the K best checkpoints passing every constraint, and export "
                        f"it where it scores higher (default {SelectConfig.average_top_k}; 0: off)")


def add_train_parsers(sub) -> None:
    from axion_ray.models.presets import ENCODERS
    from axion_ray.models.registry import STAGES

    p = sub.add_parser("train", help="train a stage on Ray Train (DDP, LoRA), keeping checkpoints by composite score")
    p.add_argument("stage", choices=[spec.name for spec in STAGES.values()] + ["chain"],
                   help="stage2: the Prithvi refiner; stage1/stage3: LoRA on TerraMind (token objective) or, with "
                        "--kind regress, the regression model; chain: Stages 1, 2, 3 in turn from S1 alone "
                        "(regression stages; each selected and exported; a re-run resumes)")
    add_training_data_options(p, several_val=True)
    p.add_argument("--out", required=True, help="run directory")
    add_model_options(p, sampling=False)
    p.add_argument("--workers", type=int)
    p.add_argument("--min-workers", type=int, help="elastic: start with as few as this many workers")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker")
    p.add_argument("--cpu-bf16", action="store_true", default=None,
                   help="CPU workers: bf16 autocast in the pixel losses (faster on CPUs with native bf16)")
    p.add_argument("--cpu-bf16-stages", type=int_list, help="chain: the stages trained with --cpu-bf16, e.g. 1")
    add_schedule_options(p)
    p.add_argument("--lr", type=float)
    p.add_argument("--lora-rank", type=int, help="0 = full fine-tuning (stage 2); TerraMind stages use rank 8 when 0")
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--timesteps", type=int, help="TerraMind diffusion steps used in validation")
    p.add_argument("--condition", choices=["opt_v1", "opt_v2"], help="stage 3: the optical array it grounds")
    add_regression_options(p)
    p.add_argument("--stage3-encoder", choices=list(ENCODERS), help="chain: Stage 3's encoder where it differs from --encoder")
    p.add_argument("--stage2-kind", choices=["refine", "regress"],
                   help="chain: Stage 2 as the Prithvi refiner or the per-pixel calibrator of opt_v1 (default: the "
                        "refiner where the preset's published Prithvi file is on disk, else the calibrator)")
    p.add_argument("--holdout-fraction", type=float,
                   help="chain: the share of the --train AOIs held out of Stage 1, where Stages 2 and 3 learn from "
                        "its errors (default 0.5; e.g. 0.34: Stage 1 on two AOIs of every three)")
    p.add_argument("--stage1-members", type=int,
                   help="chain: Stage 1 as the mean of this many members, trained side by side on a share of the "
                        "workers each, with their own seeds, exported as one file (default 1)")
    p.add_argument("--kind", choices=["generate", "refine", "regress"],
                   help="stages 1 and 3: TerraMind generation (LoRA, token objective; default) or regression; "
                        "stage 2: the Prithvi refiner (refine, default) or the per-pixel calibrator (regress)")
    p.add_argument("--seed", type=int)
    add_average_option(p)  # chain: each stage's selection
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("select", help="export the best checkpoint of a run (composite score, hard constraints)")
    p.add_argument("run")
    p.add_argument("--export", required=True, help="OUT.pt")
    p.add_argument("--fp16", action="store_true", help="store weights in fp16 (quantization_info)")
    add_average_option(p)
    add_overwrite_option(p, "an existing export (and its report)")
    p.set_defaults(func=cmd_select)
