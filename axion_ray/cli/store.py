"""Commands over tile stores: synth, ingest, status, migrate, metrics, mosaic, import-npz, export-npz."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from axion_ray.cli.options import (
    EXIT_OK,
    add_overwrite_option,
    checked_output,
    config_from_args,
    given,
    int_list,
    write_output,
)


def cmd_synth(args: argparse.Namespace) -> int:
    from axion_ray.config import SynthConfig
    from axion_ray.store.synth import synthesize_aoi

    store = synthesize_aoi(args.out, config_from_args(SynthConfig, args), overwrite=args.overwrite)
    syn = store.attrs["synthetic"]
    print(f"wrote {store.n_tiles} tiles ({store.height}x{store.width} px, overlap {store.overlap}) to {store.path}: "
          f"months {syn['months']}, biomes {syn['biomes']}, CRS {store.crs}")
    if args.scenes:
        from axion_ray.store.synth_scenes import extent_geojson, write_synthetic_scenes

        written = write_synthetic_scenes(store, args.scenes)
        extent = extent_geojson(store, Path(args.scenes) / "extent.geojson")
        print(f"wrote its S1 as {len(written['scenes'])} GeoTIFF scenes ({', '.join(p.name for p in written['scenes'])}), "
              f"an AOI polygon ({written['aoi']}) and the store's extent ({extent}) to {args.scenes}")
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
    print(f"{'array':8s} {'pending':>8s} {'done':>8s} {'failed':>8s} {'no data':>8s}")
    for name, c in summary["arrays"].items():
        print(f"{name:8s} {c['pending']:8d} {c['done']:8d} {c['failed']:8d} {c['no_data']:8d}")
    for name, c in summary["arrays"].items():
        for tile, reason in list(c["failures"].items())[:20]:
            print(f"  {name} tile {tile} failed: {reason}")
        if len(c["failures"]) > 20:
            print(f"  … and {len(c['failures']) - 20} more failed {name} tiles (use --json for all)")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from axion_ray.store.migrate import migrate_store

    migrate_store(args.store, args.to)
    return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    from axion_ray.metrics.evaluate import evaluate_store
    from axion_ray.models.registry import TRUTH_ARRAY
    from axion_ray.report import metrics_markdown
    from axion_ray.store.tile_store import TileStore

    json_out = checked_output(args.json, (args.store,), overwrite=args.overwrite, what="metrics file")
    store = TileStore.open(args.store, mode="r")
    truth = None if args.truth.lower() == "none" else args.truth
    baseline = None if args.baseline.lower() == "none" else args.baseline
    if truth == TRUTH_ARRAY and not store.has(truth):
        truth = None
        print(f"warning: store has no {TRUTH_ARRAY}; computing geometry only", file=sys.stderr)
    result = evaluate_store(store, pred=args.pred, baseline=baseline, truth=truth)
    text = json.dumps(result, indent=2)
    if json_out:
        write_output(json_out, text)
        print(f"wrote {json_out}")
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

    report = export_npz_dir(TileStore.open(args.store, mode="r"), args.out_dir, overwrite=args.overwrite,
                            **given(array=args.array, layout=args.layout, scale=args.scale))
    skipped = ", ".join(f"{n} {k}" for k, n in report.skipped.items() if n)
    print(f"wrote {report.written} {report.array} tiles to {report.directory}" + (f" (skipped {skipped})" if skipped else ""))
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from axion_ray.errors import TileDataError
    from axion_ray.store.ingest import ingest_scenes
    from axion_ray.store.scenes import scene_from_geotiff, scenes_from_stac

    *paths, out = args.paths
    if not paths and not args.stac:
        raise TileDataError("give at least one SCENE before OUT.zarr, or --stac ITEMS.json")
    scenes = [scene_from_geotiff(p) for p in paths] + (scenes_from_stac(args.stac) if args.stac else [])
    store = ingest_scenes(scenes, out, overwrite=args.overwrite, **given(
        aoi=args.aoi, crs=args.crs, resolution=args.resolution, tile_size=args.tile_size, overlap=args.overlap,
        units=args.units, month=args.month, biome_code=args.biome, min_valid=args.min_valid))
    rows, cols = store.grid_shape
    counts = store.summary()["arrays"]["opt_v1"]
    print(f"cut {len(scenes)} scene(s) into {store.n_tiles} tiles ({rows}x{cols} grid of {store.tile_size} px, "
          f"overlap {store.overlap}, {store.crs}) in {store.path}; {counts['no_data']} tile(s) under --min-valid "
          "are no data")
    return EXIT_OK


def cmd_footprints(args: argparse.Namespace) -> int:
    from axion_ray.store.footprints import write_footprints
    from axion_ray.store.tile_store import TileStore

    out = write_footprints(TileStore.open(args.store, mode="r"), args.out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return EXIT_OK


def cmd_mosaic(args: argparse.Namespace) -> int:
    from axion_ray.store.geotiff import mosaic
    from axion_ray.store.tile_store import TileStore

    out = mosaic(TileStore.open(args.store, mode="r"), args.array, args.out, overwrite=args.overwrite,
                 **given(aoi=args.aoi))
    print(f"wrote {out}")
    return EXIT_OK


def add_store_parsers(sub) -> None:
    from axion_ray.models.registry import STAGE_OUTPUTS, TRUTH_ARRAY

    p = sub.add_parser("synth", help="generate a synthetic AOI tile store")
    p.add_argument("out", help="new store path (OUT.zarr)")
    p.add_argument("--rows", type=int)
    p.add_argument("--cols", type=int)
    p.add_argument("--tile-size", type=int)
    p.add_argument("--overlap", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--shard-tiles", type=int, help="tiles per store shard (default: sized to a few MB, docs/STORE.md)")
    p.add_argument("--months", type=int_list, help="acquisition months of the swaths, e.g. 4,7")
    p.add_argument("--biomes", type=int_list, help="biome codes of the AOI's zones, e.g. 4,15")
    p.add_argument("--no-prior", dest="with_prior", action="store_false", default=None,
                   help="leave opt_v1 empty (pending)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--scenes", metavar="DIR", help="also write its S1 as overlapping GeoTIFF scenes in three CRSs "
                   "(linear power, no-data wedges, dates) and an AOI polygon, for `ingest`")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("ingest", help="S1 scenes (GeoTIFFs, STAC items; any CRS) onto one grid → a tile store")
    p.add_argument("paths", nargs="+", metavar="SCENE [SCENE ...] OUT.zarr",
                   help="S1 GeoTIFFs (VV, VH) and, last, the new store")
    p.add_argument("--stac", help="a STAC Item or ItemCollection JSON whose items have VV and VH assets")
    p.add_argument("--aoi", help="AOI polygon (GeoJSON): the grid covers its bounds, tiles touching it are kept")
    p.add_argument("--crs", help="target CRS, e.g. EPSG:32633 (default: UTM zone of the AOI's centroid)")
    p.add_argument("--resolution", type=float, help="target pixel size in CRS units (default 10 m)")
    p.add_argument("--tile-size", type=int, help="tile side in px (default 256)")
    p.add_argument("--overlap", type=int, help="px shared by neighbouring tiles (default 32)")
    p.add_argument("--units", choices=["auto", "db", "linear"], help="S1 values in the scenes (default auto)")
    p.add_argument("--month", type=int, help="acquisition month 1-12 where a scene has no date (0 = unknown)")
    p.add_argument("--biome", type=int, help="biome code 0-15")
    p.add_argument("--min-valid", type=float, help="tiles with a smaller valid fraction are no data (default 0.5)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("mosaic", help="blend a store's tiles into one GeoTIFF or Zarr")
    p.add_argument("store")
    p.add_argument("--array", default=STAGE_OUTPUTS[-1], help="array to blend (default: the last stage's output)")
    p.add_argument("--out", required=True, help="OUT.tif (a Cloud-Optimized GeoTIFF) or OUT.zarr")
    p.add_argument("--aoi", help="clip to this polygon (GeoJSON): outside it, nodata")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=cmd_mosaic)

    p = sub.add_parser("footprints", help="every tile's polygon with status, failure reason and valid fractions")
    p.add_argument("store")
    p.add_argument("--out", required=True, help="OUT.geojson")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=cmd_footprints)

    p = sub.add_parser("status", help="per-array pending/done/failed counts and failure reasons")
    p.add_argument("store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("migrate", help="convert a format-1 store (one file per tile) to the sharded format 2")
    p.add_argument("store")
    p.add_argument("--to", help="write the converted store here and leave STORE as it is (needed for object "
                                "storage); by default STORE is converted in place and the old one kept as "
                                "STORE.format1")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("metrics", help="spectral, geometry and composite metrics over a store")
    p.add_argument("store")
    p.add_argument("--pred", default=STAGE_OUTPUTS[1])
    p.add_argument("--baseline", default=STAGE_OUTPUTS[0],
                   help="array whose edges must not move, 'flat' (the truth's mean spectrum: edges then against "
                        "the truth), or 'none'")
    p.add_argument("--truth", default=TRUTH_ARRAY, help="reference array, or 'none'")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    add_overwrite_option(p, "an existing --json file")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("import-npz", help="Axion-Sat NPZ tile directory → tile store")
    p.add_argument("input_dir")
    p.add_argument("out", help="new store path (OUT.zarr)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import_npz)

    p = sub.add_parser("export-npz", help="tile store → Axion-Sat NPZ tile directory")
    p.add_argument("store")
    p.add_argument("out_dir")
    p.add_argument("--array", help="array to export (default opt_v2)")
    p.add_argument("--layout", choices=["arrays", "bands"],
                   help="NPZ keys: one array under its name (default), or Axion-Sat's per-band keys (s2_b2…s2_b8)")
    p.add_argument("--scale", choices=["source", "reflectance", "dn"],
                   help="optical values: as each tile was imported (default), reflectance 0–1, or DN 0–10000")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names in OUT_DIR")
    p.set_defaults(func=cmd_export_npz)
