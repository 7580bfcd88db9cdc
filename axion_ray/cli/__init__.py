"""`axion-ray …` — thin: parse arguments, call one library function, print (docs/ARCHITECTURE.md §5).

One module per family of commands (`store`, `infer`, `train`, `classify`, `tune`), their shared
options in `options`. User mistakes (`AxionRayError`) exit 2 with one line on stderr; heavy libraries
load inside commands so `--help` and `status` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from axion_ray.cli.classify import add_classify_parser
from axion_ray.cli.infer import add_infer_parsers
from axion_ray.cli.options import EXIT_OK, EXIT_USER_ERROR, Parser
from axion_ray.cli.store import add_store_parsers
from axion_ray.cli.train import add_train_parsers
from axion_ray.cli.tune import add_tune_parser
from axion_ray.errors import AxionRayError
from axion_ray.version import __version__

__all__ = ["EXIT_OK", "EXIT_USER_ERROR", "build_parser", "main"]


def cmd_demo(args: argparse.Namespace) -> int:
    from axion_ray.demo import run_demo

    run_demo(args.out)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="axion-ray", description="SAR-to-optical translation on Ray: tile stores, models, metrics.")
    parser.add_argument("--version", action="version", version=f"axion-ray {__version__}")
    parser.add_argument("--verbose", action="store_true", help="let Ray's own log lines through to the terminal")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("demo", help="synthetic AOI end to end with embedded defaults")
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.set_defaults(func=cmd_demo)
    add_store_parsers(sub)
    add_infer_parsers(sub)
    add_train_parsers(sub)
    add_classify_parser(sub)
    add_tune_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        import os

        from axion_ray.distributed.session import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    try:
        return int(args.func(args))
    except AxionRayError as exc:
        print(f"axion-ray {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"axion-ray {args.command}: interrupted", file=sys.stderr)
        return 130

