"""Inference commands: `infer` (a store, on the Ray pipeline) and `infer-npz` (Axion-Sat's NPZ layout)."""

from __future__ import annotations

import argparse
import sys

from axion_ray.cli.options import (
    EXIT_OK,
    add_model_options,
    add_overwrite_option,
    add_ray_address,
    checked_output,
    config_from_args,
    int_list,
    min_max,
    say,
    write_output,
)
from axion_ray.errors import ConfigError


def cmd_infer(args: argparse.Namespace) -> int:
    from axion_ray.config import InferConfig
    from axion_ray.pipeline.run import EXIT_FAILED_TILES, run_pipeline, summary_json

    json_out = checked_output(args.json, (args.store,), overwrite=args.overwrite, what="summary file")
    summary = run_pipeline(args.store, config_from_args(InferConfig, args), say=say)
    print(summary.to_text())
    if json_out:
        write_output(json_out, summary_json(summary))
        print(f"wrote {json_out}")
    if summary.failed:
        print(f"axion-ray infer: {summary.failed} tile-stage(s) failed (see above); the rest completed",
              file=sys.stderr)
        return EXIT_FAILED_TILES
    return EXIT_OK


def cmd_infer_npz(args: argparse.Namespace) -> int:
    from axion_ray.pipeline.npz_job import load_infer_config, run_npz_inference
    from axion_ray.pipeline.run import EXIT_FAILED_TILES

    cfg = load_infer_config(args.config, batch_size=args.batch_size, device=args.device, amp=args.amp,
                            allow_random_init=args.allow_random_init, weights=args.weights,
                            timesteps=args.timesteps, address=args.address,
                            **{f"stage{args.stage}_checkpoint": args.checkpoint})
    input_dir = args.opt_v2_dir or args.input_dir
    if input_dir is None or (args.opt_v2_dir and args.input_dir) or bool(args.opt_v2_dir) != bool(args.s1_dir):
        raise ConfigError("give --input_dir, or Stage 3's pair of directories --opt-v2-dir and --s1-dir")
    summary = run_npz_inference(args.stage, input_dir, args.output_dir, cfg,
                                skip_existing=not args.no_skip_existing, say=say,
                                output_suffix=args.output_suffix or "", layout=args.layout or "arrays",
                                s1_dir=args.s1_dir)
    print(summary.to_text())
    if summary.failures:
        print(f"axion-ray infer-npz: {len(summary.failures)} tile(s) failed (listed above)", file=sys.stderr)
        return EXIT_FAILED_TILES
    return EXIT_OK


def add_infer_parsers(sub) -> None:
    from axion_ray.models.registry import STAGE_KINDS, STAGES

    p = sub.add_parser("infer", help="run stages 1-3 over every pending tile on Ray Data")
    p.add_argument("store")
    p.add_argument("--stages", type=int_list, help="e.g. 1,2,3 (the default) or 2")
    add_model_options(p)
    for stage in STAGES:
        p.add_argument(f"--stage{stage}-checkpoint", help=f"trained Stage {stage} checkpoint (.pt)")
    for stage in (1, 3):
        p.add_argument(f"--stage{stage}-kind", choices=list(STAGE_KINDS[stage]),
                       help=f"Stage {stage}: TerraMind generation or the regression model (default: the checkpoint's "
                            "kind, else generate)")
    p.add_argument("--tta", type=int, metavar="N",
                   help="test-time views for the regression UNet stages: 1 (default), 4 or 8 flips/transposes "
                        "averaged, for N x their model time")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None, help="fp32 on CUDA too")
    p.add_argument("--no-skip-existing", dest="skip_existing", action="store_false", default=None,
                   help="redo tiles already done")
    p.add_argument("--actors", type=min_max, metavar="MIN:MAX", help="elastic actor pool per stage (default 1:1)")
    p.add_argument("--num-cpus", type=float, help="CPUs per stage actor (default: shared fairly)")
    p.add_argument("--num-gpus", type=float, help="GPUs per stage actor (fractions allowed)")
    p.add_argument("--tiles-per-read-task", type=int,
                   help="tiles per read task (a block): smaller spreads reads over more tasks and nodes")
    add_ray_address(p)
    p.add_argument("--wait", action="store_true", default=None,
                   help="if another run holds the store, wait for it instead of stopping")
    p.add_argument("--json", metavar="OUT", help="write the run summary as JSON")
    add_overwrite_option(p, "an existing --json file")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("infer-npz", help="Axion-Sat infer_stage2.py options, any stage, on the Ray pipeline")
    p.add_argument("--stage", type=int, default=2, choices=list(STAGES))
    p.add_argument("--checkpoint", help="trained checkpoint (.pt); required for stage 2")
    p.add_argument("--input_dir", help="the tiles (or, for Axion-Sat's Stage 3 layout, --opt-v2-dir and --s1-dir)")
    p.add_argument("--opt-v2-dir", "--opt_v2_dir", dest="opt_v2_dir",
                   help="stage 3: the opt_v2 tiles, paired by file name with those in --s1-dir")
    p.add_argument("--s1-dir", "--s1_dir", dest="s1_dir", help="stage 3: the S1 tiles")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--config", help="YAML with model options (its infer: section or known top-level keys)")
    p.add_argument("--batch_size", type=int)
    p.add_argument("--device", help="cuda, cuda:N, cpu or auto (default: cuda, falling back to the CPU with a "
                                    "warning, as Axion-Sat's scripts do)")
    p.add_argument("--output-suffix", "--output_suffix", dest="output_suffix",
                   help="appended to each output file's stem (Axion-Sat's Stage 1 writes <stem>_opt.npz)")
    p.add_argument("--layout", choices=["arrays", "bands", "stage3"],
                   help="output keys: the stage's array (default), Axion-Sat's per-band keys (s2_b2…s2_b8), or "
                        "their Stage 3 output (opt_final + opt_v3, quality_status; the default with --s1-dir)")
    p.add_argument("--no_amp", dest="amp", action="store_false", default=None)
    p.add_argument("--no_skip_existing", action="store_true")
    p.add_argument("--weights", help="pretrained weights file or directory (stages 1 and 3)")
    p.add_argument("--timesteps", type=int, help="TerraMind diffusion steps (stages 1 and 3)")
    p.add_argument("--allow-random-init", "--allow_random_init", dest="allow_random_init", action="store_true",
                   default=None)
    add_ray_address(p)
    p.set_defaults(func=cmd_infer_npz)
