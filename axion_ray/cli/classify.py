"""`axion-ray classify …` subcommands — thin wrappers over `axion_ray.classify`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from axion_ray.cli.options import (
    EXIT_OK,
    add_overwrite_option,
    add_ray_address,
    checked_output,
    class_names,
    config_from_args,
    given,
    int_list,
    min_max,
    write_output,
)
from axion_ray.cli.options import say as _say


def classifier_config(args: argparse.Namespace):
    from axion_ray.config import ClassifierConfig

    return config_from_args(ClassifierConfig, args, use_gpu=args.gpu)


def cmd_two_stage(args):
    from axion_ray.classify.workflow import two_stage

    m = two_stage(args.data, args.out, classifier_config(args), _say)
    print(f"binary accuracy {m['binary_accuracy']:.4f}, 3-class accuracy {m['accuracy_3class']:.4f}, "
          f"pit recall {m['per_class']['pit']['recall']:.4f}; report {Path(args.out) / 'REPORT.md'}")
    return EXIT_OK


def cmd_train(args):
    from axion_ray.classify import workflow

    cfg = classifier_config(args)
    if args.three_class:
        s = workflow.train_three_class(args.data, args.out, cfg, _say)
    elif args.binary:
        s = workflow.train_binary(args.data, args.out, cfg, _say)
    else:  # a plain classifier over the given classes
        from axion_ray.classify.data import load_split
        from axion_ray.classify.train import train_classifier

        train, val = (load_split(args.data, s, cfg.classes, cfg.image_size) for s in ("train", "val"))
        for item in train.skipped + val.skipped:
            _say(f"skipped unreadable image {item['path']}: {item['reason']}")
        s = train_classifier(train, val, args.out, cfg, say=_say)
    print(f"best epoch {s['best_epoch']}: accuracy {s['best']['accuracy']:.4f} → {s['checkpoint']}")
    return EXIT_OK


def cmd_mine(args):
    from axion_ray.classify.workflow import mine

    mine(args.data, args.out, classifier_config(args), _say)
    return EXIT_OK


def cmd_thresholds(args):
    from axion_ray.classify.workflow import thresholds

    thresholds(args.data, args.out, classifier_config(args), _say)
    return EXIT_OK


def cmd_report(args):
    from axion_ray.classify.workflow import report

    report(args.data, args.out, classifier_config(args), _say)
    return EXIT_OK


def cmd_infer(args):
    from axion_ray.classify.infer import classify_images

    checked_output(args.out, (args.images, args.run), overwrite=args.overwrite, what="predictions file")
    r = classify_images(args.run, args.images, args.out, num_gpus=1.0 if args.gpu else 0.0,
                        device="cuda" if args.gpu else "cpu", address=args.address,
                        **given(batch_size=args.batch_size, actors=args.actors))
    print(f"classified {r['images']} images → {r['out']}: " + ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items())))
    return EXIT_OK


def cmd_latency(args):
    from axion_ray.classify.latency import measure_latency
    from axion_ray.classify.models import build_classifier
    from axion_ray.models.common import resolve_device

    out = checked_output(args.out, overwrite=args.overwrite, what="latency file")
    device = str(resolve_device(args.device))
    model = build_classifier(args.model, args.num_classes, image_size=args.image_size, weights=args.weights,
                             allow_random_init=True)  # latency does not depend on the weights' values
    r = measure_latency(model, image_size=args.image_size, device=device, fp16=args.fp16,
                        **given(batch_sizes=args.batch_sizes))
    print(f"{args.model}: {r['params'] / 1e6:.1f}M params, {r['size_mb']:.1f} MB ({'fp16' if args.fp16 else 'fp32'}), "
          f"{r['device_name']}, {r['threads']} threads")
    print("| batch | p50 ms/img | p95 ms/img | images/s |\n|---|---|---|---|")
    for row in r["results"]:
        print(f"| {row['batch_size']} | {row['p50_ms_per_image']:.2f} | {row['p95_ms_per_image']:.2f} "
              f"| {row['images_per_s']:.1f} |")
    if out:
        write_output(out, json.dumps(r, indent=2))
    return EXIT_OK


def cmd_compare(args):
    from axion_ray.classify.latency import compare_table

    out = checked_output(args.out, tuple(args.runs) + tuple(args.latency), overwrite=args.overwrite, what="table file")
    table = compare_table(args.runs, args.latency, **given(batch_size=args.batch_size))
    print(table, end="")
    if out:
        write_output(out, table)
    return EXIT_OK


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Options of every classifier-training command; defaults live in `ClassifierConfig`."""
    p.add_argument("--data", required=True, help="DATA/{train,val}/<class>/*.png|jpg")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--model", help="preset or any timm model name (default convnextv2_tiny)")
    p.add_argument("--mode", choices=["finetune", "linear_probe"], help="default: the preset's")
    p.add_argument("--weights", help="pretrained weights file or directory (else $AXION_RAY_WEIGHTS, HF cache)")
    p.add_argument("--allow-random-init", action="store_true", default=None)
    p.add_argument("--classes", type=class_names, help="class folder names, comma-separated (default clean,pit)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--head-epochs", type=int, help="3-class head fine-tuning epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--head-lr", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--augment", choices=["none", "light", "heavy"])
    p.add_argument("--no-normalize", dest="normalize", action="store_false", default=None,
                   help="feed [0, 1] pixels (the team's production inputs)")
    p.add_argument("--select-metric", help="accuracy, macro_f1 or <class>_recall")
    p.add_argument("--workers", type=int)
    p.add_argument("--gpu", action="store_true", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--maybe-low", type=float)
    p.add_argument("--maybe-high", type=float)
    p.add_argument("--recall-floor", type=float)


def add_classify_parser(sub) -> None:
    group = sub.add_parser("classify", help="inspection classifiers: two-stage training, thresholds, latency, inference")
    csub = group.add_subparsers(dest="classify_command", required=True, parser_class=type(group))

    p = csub.add_parser("two-stage", help="binary → mine 'maybe' → 3-class head → thresholds → report")
    add_training_options(p)
    p.set_defaults(func=cmd_two_stage)

    p = csub.add_parser("train", help="train a classifier (or one step of the two-stage workflow)")
    add_training_options(p)
    step = p.add_mutually_exclusive_group()
    step.add_argument("--binary", action="store_true", help="step a: binary model into OUT/binary/")
    step.add_argument("--three-class", action="store_true", help="step c: 3-class head from OUT/binary + OUT/mined.json")
    p.set_defaults(func=cmd_train)

    for name, fn, text in (("mine", cmd_mine, "step b: relabel uncertain images as 'maybe' (OUT/mined.json)"),
                           ("thresholds", cmd_thresholds, "step d: thresholds with the pit-recall floor"),
                           ("report", cmd_report, "step e: OUT/metrics.json and OUT/REPORT.md")):
        p = csub.add_parser(name, help=text)
        add_training_options(p)
        p.set_defaults(func=fn)

    p = csub.add_parser("infer", help="classify a folder of images on Ray Data → Parquet")
    p.add_argument("--run", required=True, help="run directory (or a model_best.pt)")
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True, help="OUT.parquet")
    add_overwrite_option(p)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--actors", type=min_max, metavar="MIN:MAX", help="actor pool size N or MIN:MAX (default 1)")
    p.add_argument("--gpu", action="store_true", help="one GPU per actor")
    add_ray_address(p)
    p.set_defaults(func=cmd_infer)

    p = csub.add_parser("latency", help="measure p50/p95 latency and throughput of a model")
    p.add_argument("--model", required=True)
    p.add_argument("--batch-sizes", type=int_list, help="default 1,8,32")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=3)
    p.add_argument("--weights")
    p.add_argument("--out", help="write the figures as JSON (for `compare`)")
    add_overwrite_option(p)
    p.set_defaults(func=cmd_latency)

    p = csub.add_parser("compare", help="model-comparison table from measured runs and latency files")
    p.add_argument("--runs", nargs="*", default=[], help="run directories (metrics.json / history.json)")
    p.add_argument("--latency", nargs="*", default=[], help="latency JSON files from `classify latency --out`")
    p.add_argument("--batch-size", type=int, help="batch size of the latency column (default 1)")
    p.add_argument("--out", help="write the Markdown table here too")
    add_overwrite_option(p)
    p.set_defaults(func=cmd_compare)
