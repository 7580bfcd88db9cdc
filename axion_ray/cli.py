"""`axion-ray …` — thin: parse arguments, call one library function, print (ARCHITECTURE §5).

User mistakes (`AxionRayError`) exit 2 with one line on stderr; heavy libraries load inside commands
so `--help` and `status` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from axion_ray import __version__
from axion_ray.errors import AxionRayError

EXIT_OK, EXIT_USER_ERROR = 0, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake on one line (exit 2) instead of a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# ---------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    from axion_ray.demo import run_demo

    run_demo(args.out)
    return EXIT_OK


def cmd_synth(args: argparse.Namespace) -> int:
    from axion_ray.config import SynthConfig
    from axion_ray.store.synth import synthesize_aoi

    cfg = SynthConfig(rows=args.rows, cols=args.cols, tile_size=args.tile_size, overlap=args.overlap,
                      seed=args.seed, months=args.months, biomes=args.biomes, with_prior=not args.no_prior)
    store = synthesize_aoi(args.out, cfg, overwrite=args.overwrite)
    syn = store.attrs["synthetic"]
    print(f"wrote {store.n_tiles} tiles ({store.height}x{store.width} px, overlap {store.overlap}) to {store.path}: "
          f"months {syn['months']}, biomes {syn['biomes']}, CRS {store.crs}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from axion_ray.store.tile_store import TileStore

    summary = TileStore.open(args.store, mode="r").summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    print(f"{summary['path']}: {summary['n_tiles']} tiles of {summary['tile_shape'][0]}x{summary['tile_shape'][1]} px, "
          f"grid {summary['grid_shape'][0]}x{summary['grid_shape'][1]}, overlap {summary['overlap']} px, "
          f"CRS {summary['crs']}, inputs {', '.join(summary['inputs'])}")
    print(f"{'array':8s} {'pending':>8s} {'done':>8s} {'failed':>8s}")
    for name, c in summary["arrays"].items():
        print(f"{name:8s} {c['pending']:8d} {c['done']:8d} {c['failed']:8d}")
    for name, c in summary["arrays"].items():
        for tile, reason in list(c["failures"].items())[:20]:
            print(f"  {name} tile {tile} failed: {reason}")
        if len(c["failures"]) > 20:
            print(f"  … and {len(c['failures']) - 20} more failed {name} tiles (use --json for all)")
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    from axion_ray.metrics.evaluate import evaluate_store
    from axion_ray.report import metrics_markdown
    from axion_ray.store.tile_store import TileStore

    store = TileStore.open(args.store, mode="r")
    truth = None if args.truth.lower() == "none" else args.truth
    baseline = None if args.baseline.lower() == "none" else args.baseline
    if truth == "s2_truth" and not store.has(truth):
        truth = None
        print("warning: store has no s2_truth; computing geometry only", file=sys.stderr)
    result = evaluate_store(store, pred=args.pred, baseline=baseline, truth=truth)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
        print(f"wrote {args.json}")
    print(metrics_markdown(result), end="")
    return EXIT_OK


def cmd_import_npz(args: argparse.Namespace) -> int:
    from axion_ray.store.npz import import_npz_dir

    report = import_npz_dir(args.input_dir, args.out, overwrite=args.overwrite)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"imported {report.n_tiles} tiles ({', '.join(report.arrays)}) into {report.store.path}")
    return EXIT_OK


def cmd_export_npz(args: argparse.Namespace) -> int:
    from axion_ray.store.npz import export_npz_dir
    from axion_ray.store.tile_store import TileStore

    report = export_npz_dir(TileStore.open(args.store, mode="r"), args.out_dir, args.array)
    skipped = ", ".join(f"{n} {k}" for k, n in report.skipped.items() if n)
    print(f"wrote {report.written} {report.array} tiles to {report.directory}" + (f" (skipped {skipped})" if skipped else ""))
    return EXIT_OK


def _actors(text: str) -> tuple[int, int]:
    try:
        lo, _, hi = text.partition(":")
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX (e.g. 1:4), got {text!r}") from None


def cmd_infer(args: argparse.Namespace) -> int:
    from axion_ray.config import InferConfig
    from axion_ray.pipeline.run import EXIT_FAILED_TILES, run_pipeline, summary_json

    cfg = InferConfig(
        stages=args.stages, preset=args.preset, weights=args.weights, stage1_checkpoint=args.stage1_checkpoint,
        stage2_checkpoint=args.stage2_checkpoint, stage3_checkpoint=args.stage3_checkpoint,
        allow_random_init=args.allow_random_init, timesteps=args.timesteps, seed=args.seed,
        batch_size=args.batch_size, device=args.device, amp=not args.no_amp,
        skip_existing=not args.no_skip_existing, actors=args.actors, num_cpus=args.num_cpus,
        num_gpus=args.num_gpus, address=args.address, tiles_per_read_task=args.tiles_per_read_task)
    summary = run_pipeline(args.store, cfg, say=lambda line: print(line, flush=True))
    print(summary.to_text())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(summary_json(summary))
        print(f"wrote {args.json}")
    if summary.failed:
        print(f"axion-ray infer: {summary.failed} tile-stage(s) failed (see above); the rest completed",
              file=sys.stderr)
        return EXIT_FAILED_TILES
    return EXIT_OK


def cmd_infer_npz(args: argparse.Namespace) -> int:
    from axion_ray.pipeline.npz_job import load_infer_config, run_npz_inference
    from axion_ray.pipeline.run import EXIT_FAILED_TILES

    checkpoints = {f"stage{args.stage}_checkpoint": args.checkpoint}
    cfg = load_infer_config(args.config, batch_size=args.batch_size, device=args.device, amp=not args.no_amp,
                            allow_random_init=args.allow_random_init or None, weights=args.weights,
                            timesteps=args.timesteps, address=args.address, **checkpoints)
    summary = run_npz_inference(args.stage, args.input_dir, args.output_dir, cfg,
                                skip_existing=not args.no_skip_existing, say=lambda line: print(line, flush=True))
    print(summary.to_text())
    if summary.failures:
        print(f"axion-ray infer-npz: {len(summary.failures)} tile(s) failed (listed above)", file=sys.stderr)
        return EXIT_FAILED_TILES
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from axion_ray.store.geotiff import ingest_geotiff

    store = ingest_geotiff(args.scene, args.out, tile_size=args.tile_size, overlap=args.overlap, units=args.units,
                           month=args.month, biome_code=args.biome, overwrite=args.overwrite)
    rows, cols = store.grid_shape
    print(f"cut {args.scene} into {store.n_tiles} tiles ({rows}x{cols} grid of {store.tile_size} px, "
          f"overlap {store.overlap}) in {store.path}")
    return EXIT_OK


def cmd_mosaic(args: argparse.Namespace) -> int:
    from axion_ray.store.geotiff import mosaic
    from axion_ray.store.tile_store import TileStore

    out = mosaic(TileStore.open(args.store, mode="r"), args.array, args.out)
    print(f"wrote {out}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from axion_ray.config import TrainConfig
    from axion_ray.train import train_stage

    cfg = TrainConfig(stage=int(args.stage[-1]), preset=args.preset, weights=args.weights,
                      allow_random_init=args.allow_random_init, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, workers=args.workers,
                      min_workers=args.min_workers, use_gpu=args.gpu, val_every_steps=args.val_every,
                      seed=args.seed, timesteps=args.timesteps, condition=args.condition,
                      max_val_tiles=args.max_val_tiles)
    summary = train_stage(args.train, args.val, args.out, cfg, say=lambda line: print(line, flush=True))
    for c in summary["checkpoints"]:
        print(f"step {c['step']}: composite {c['composite_score']:+.4f} ({'PASS' if c['constraints_pass'] else 'FAIL'}) "
              f"ndvi_rmse={c['ndvi_rmse']:.4f} evi_rmse={c['evi_rmse']:.4f} sam_rad={c['sam_rad']:.4f}")
    print(f"run directory: {summary['run_dir']} (next: axion-ray select {args.out} --export best.pt)")
    return EXIT_OK


def cmd_select(args: argparse.Namespace) -> int:
    from axion_ray.train.select import select_and_export

    meta = select_and_export(args.run, args.export, fp16=args.fp16, warn=lambda line: print(line, file=sys.stderr))
    best = meta["selected"]
    print(f"selected step {best['step']} (composite {best['composite_score']:+.4f}, "
          f"constraints {'PASS' if best['constraints_pass'] else 'FAIL'}) → {args.export}")
    return EXIT_OK


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options every command that builds a model takes."""
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument("--weights", help="pretrained weights file or directory (else $AXION_RAY_WEIGHTS, HF cache)")
    p.add_argument("--timesteps", type=int, default=10, help="TerraMind diffusion steps")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (reproducible runs)")
    p.add_argument("--allow-random-init", action="store_true",
                   help="build with random weights when pretrained ones are missing (tests, smoke runs)")


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="axion-ray", description="SAR-to-optical translation on Ray: tile stores, models, metrics.")
    parser.add_argument("--version", action="version", version=f"axion-ray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="synthetic AOI end to end with embedded defaults")
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synth", help="generate a synthetic AOI tile store")
    p.add_argument("out", help="new store path (OUT.zarr)")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--tile-size", type=int, default=64)
    p.add_argument("--overlap", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--months", type=int_list, default=(), help="acquisition months of the swaths, e.g. 4,7")
    p.add_argument("--biomes", type=int_list, default=(), help="biome codes of the AOI's zones, e.g. 4,15")
    p.add_argument("--no-prior", action="store_true", help="leave opt_v1 empty (pending)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="cut a georeferenced S1 GeoTIFF (VV, VH) into a tile store")
    p.add_argument("scene")
    p.add_argument("out", help="new store path (OUT.zarr)")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--units", default="auto", choices=["auto", "db", "linear"])
    p.add_argument("--month", type=int, default=0, help="acquisition month 1-12 (0 = unknown)")
    p.add_argument("--biome", type=int, default=0, help="biome code 0-15")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("mosaic", help="blend a store's tiles into one GeoTIFF or Zarr")
    p.add_argument("store")
    p.add_argument("--array", default="opt_v3")
    p.add_argument("--out", required=True, help="OUT.tif or OUT.zarr")
    p.set_defaults(func=cmd_mosaic)

    p = sub.add_parser("status", help="per-array pending/done/failed counts and failure reasons")
    p.add_argument("store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("metrics", help="spectral, geometry and composite metrics over a store")
    p.add_argument("store")
    p.add_argument("--pred", default="opt_v2")
    p.add_argument("--baseline", default="opt_v1", help="array whose edges must not move, or 'none'")
    p.add_argument("--truth", default="s2_truth", help="reference array, or 'none'")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("infer", help="run stages 1-3 over every pending tile on Ray Data")
    p.add_argument("store")
    p.add_argument("--stages", type=int_list, default=(1, 2, 3), help="e.g. 1,2,3 or 2")
    add_model_options(p)
    p.add_argument("--stage1-checkpoint")
    p.add_argument("--stage2-checkpoint")
    p.add_argument("--stage3-checkpoint")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA too")
    p.add_argument("--no-skip-existing", action="store_true", help="redo tiles already done")
    p.add_argument("--actors", type=_actors, default=(1, 1), metavar="MIN:MAX", help="elastic actor pool per stage")
    p.add_argument("--num-cpus", type=float, help="CPUs per stage actor (default: shared fairly)")
    p.add_argument("--num-gpus", type=float, help="GPUs per stage actor (fractions allowed)")
    p.add_argument("--tiles-per-read-task", type=int, default=16,
                   help="tiles per read task (a block): smaller spreads reads over more tasks and nodes")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--json", metavar="OUT", help="write the run summary as JSON")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("infer-npz", help="Axion-Sat infer_stage2.py options, any stage, on the Ray pipeline")
    p.add_argument("--stage", type=int, default=2, choices=[1, 2, 3])
    p.add_argument("--checkpoint", help="trained checkpoint (.pt); required for stage 2")
    p.add_argument("--input_dir", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--config", help="YAML with model options (its infer: section or known top-level keys)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    p.add_argument("--no_amp", action="store_true")
    p.add_argument("--no_skip_existing", action="store_true")
    p.add_argument("--weights", help="pretrained weights file or directory (stages 1 and 3)")
    p.add_argument("--timesteps", type=int, help="TerraMind diffusion steps (stages 1 and 3)")
    p.add_argument("--allow-random-init", "--allow_random_init", dest="allow_random_init", action="store_true")
    p.add_argument("--address", help="Ray cluster address")
    p.set_defaults(func=cmd_infer_npz)

    p = sub.add_parser("train", help="train a stage on Ray Train (DDP, LoRA), keeping checkpoints by composite score")
    p.add_argument("stage", choices=["stage1", "stage2", "stage3"],
                   help="stage2: the Prithvi refiner; stage1/stage3: LoRA on TerraMind (token objective)")
    p.add_argument("--train", required=True, nargs="+",
                   help="training store(s) (s1, opt_v1[, opt_v2] + s2_truth); several AOIs are pooled")
    p.add_argument("--val", required=True, help="validation store (same arrays)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "base", "large"])
    p.add_argument("--weights", help="pretrained backbone weights file or directory")
    p.add_argument("--allow-random-init", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--min-workers", type=int, help="elastic: start with as few as this many workers")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lora-rank", type=int, default=0,
                   help="0 = full fine-tuning (stage 2); TerraMind stages use rank 8 when 0")
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--val-every", type=int, default=50, help="validate and checkpoint every N steps")
    p.add_argument("--max-val-tiles", type=int, default=256)
    p.add_argument("--timesteps", type=int, default=1, help="TerraMind diffusion steps used in validation")
    p.add_argument("--condition", default="opt_v2", choices=["opt_v1", "opt_v2"],
                   help="stage 3: the optical array it grounds")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    from axion_ray.classify.cli import add_classify_parser

    add_classify_parser(sub)
    from axion_ray.tune.cli import add_tune_parser

    add_tune_parser(sub)

    p = sub.add_parser("select", help="export the best checkpoint of a run (composite score, hard constraints)")
    p.add_argument("run")
    p.add_argument("--export", required=True, help="OUT.pt")
    p.add_argument("--fp16", action="store_true", help="store weights in fp16 (quantization_info)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("import-npz", help="Axion-Sat NPZ tile directory → tile store")
    p.add_argument("input_dir")
    p.add_argument("out", help="new store path (OUT.zarr)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import_npz)

    p = sub.add_parser("export-npz", help="tile store → Axion-Sat NPZ tile directory")
    p.add_argument("store")
    p.add_argument("out_dir")
    p.add_argument("--array", default="opt_v2")
    p.set_defaults(func=cmd_export_npz)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AxionRayError as exc:
        print(f"axion-ray {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"axion-ray {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
