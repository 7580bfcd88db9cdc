"""`axion-ray tune stage2|stage3|classifier` — thin wrappers over `axion_ray.tune.sweeps`."""

from __future__ import annotations

import argparse

EXIT_OK = 0


def _resources(text: str) -> dict[str, float]:
    """`workers=2,cpus=0.8,gpus=1` → per-trial training resources."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in ("workers", "cpus", "gpus") or not value:
            raise argparse.ArgumentTypeError(f"expected workers=N,cpus=X,gpus=0|1, got {text!r}")
        try:
            out[key] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key} must be a number, got {value!r}") from None
    return out


def _sweep(args):
    from axion_ray.tune.sweeps import SweepConfig

    r = args.resources_per_trial or {}
    return SweepConfig(samples=args.samples, scheduler=args.scheduler, max_concurrent=args.max_concurrent,
                       workers_per_trial=int(r.get("workers", 1)), cpus_per_worker=r.get("cpus"),
                       gpus_per_trial=bool(r.get("gpus", 0)), resume=args.resume, seed=args.seed)


def _print_summary(s) -> None:
    best = s.get("best")
    if best:
        print(f"best trial {best['trial_id']}: score {best.get('score', float('nan')):.4f} "
              f"({'PASS' if best.get('passes') else 'FAIL'}) config {best['config']}")
    print(f"{s['trials']} trial(s) → {s['out']}/results.csv, best_config.yaml, SWEEP.md, sweep.png"
          + (f"; exported {s['export']}" if s.get("export") else ""))


def cmd_tune_stage2(args):
    from axion_ray.config import TrainConfig
    from axion_ray.tune.sweeps import tune_stage2

    base = TrainConfig(preset=args.preset, weights=args.weights, allow_random_init=args.allow_random_init,
                       epochs=args.epochs, batch_size=args.batch_size, val_every_steps=args.val_every,
                       max_val_tiles=args.max_val_tiles, seed=args.seed)
    _print_summary(tune_stage2(args.train, args.val, args.out, base, _sweep(args), args.space,
                               say=lambda line: print(line, flush=True)))
    return EXIT_OK


def cmd_tune_stage3(args):
    from axion_ray.tune.sweeps import tune_stage3

    _print_summary(tune_stage3(args.store, args.out, timesteps=args.timesteps, condition=args.condition,
                               max_tiles=args.max_tiles, preset=args.preset, weights=args.weights,
                               checkpoint=args.checkpoint, allow_random_init=args.allow_random_init,
                               sweep=_sweep(args), space_file=args.space, say=lambda line: print(line, flush=True)))
    return EXIT_OK


def cmd_tune_classifier(args):
    from axion_ray.classify.cli import config_from_args
    from axion_ray.tune.sweeps import tune_classifier

    models = tuple(m for m in (args.models or "").split(",") if m)
    _print_summary(tune_classifier(args.data, args.out, config_from_args(args), models=models, sweep=_sweep(args),
                                   space_file=args.space, say=lambda line: print(line, flush=True)))
    return EXIT_OK


def _sweep_options(p: argparse.ArgumentParser, default_samples: int = 4, out_and_seed: bool = True) -> None:
    if out_and_seed:
        p.add_argument("--out", required=True, help="sweep directory")
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=default_samples, help="trials drawn from the space")
    p.add_argument("--space", help="search-space YAML (replaces the default space)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    p.add_argument("--max-concurrent", type=int, default=1)
    p.add_argument("--resources-per-trial", type=_resources, help="workers=N,cpus=X,gpus=0|1 for each trial's trainer")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")


def add_tune_parser(sub) -> None:
    from axion_ray.classify.cli import add_training_options
    from axion_ray.cli import int_list

    group = sub.add_parser("tune", help="Ray Tune sweeps against the composite score / validation accuracy")
    tsub = group.add_subparsers(dest="tune_command", required=True, parser_class=type(group))

    p = tsub.add_parser("stage2", help="sweep Stage 2 training (lr, weight decay, loss weights, LoRA …)")
    p.add_argument("--train", required=True, nargs="+", help="training store(s); several AOIs are pooled")
    p.add_argument("--val", required=True)
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument("--weights")
    p.add_argument("--allow-random-init", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--max-val-tiles", type=int, default=256)
    _sweep_options(p)
    p.set_defaults(func=cmd_tune_stage2)

    p = tsub.add_parser("stage3", help="score Stage 3 diffusion timesteps (and other knobs): quality and tiles/s")
    p.add_argument("--store", required=True, help="store with s1, the condition and s2_truth")
    p.add_argument("--timesteps", type=int_list, default=(1, 2, 5, 10, 20))
    p.add_argument("--condition", default="opt_v2", choices=["opt_v1", "opt_v2"])
    p.add_argument("--max-tiles", type=int, default=32)
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument("--weights")
    p.add_argument("--checkpoint", help="a Stage 3 checkpoint (LoRA adapters) to sweep")
    p.add_argument("--allow-random-init", action="store_true")
    _sweep_options(p, default_samples=1)
    p.set_defaults(func=cmd_tune_stage3)

    p = tsub.add_parser("classifier", help="sweep label smoothing, lr, augmentation, backbone (pit recall a floor)")
    add_training_options(p)  # brings --out (the sweep directory here) and --seed
    p.add_argument("--models", help="backbones to sweep, comma-separated (presets or timm names)")
    _sweep_options(p, out_and_seed=False)
    p.set_defaults(func=cmd_tune_classifier)
