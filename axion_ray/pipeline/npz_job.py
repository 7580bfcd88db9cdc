"""`axion-ray infer-npz`: Axion-Sat's `infer_stage2.py` interface, for any stage, on our Ray pipeline.

Input tiles (NPZ + JSON sidecar) are read leniently — an unreadable or malformed tile is recorded as
failed with its reason and the rest go on — grouped by tile size into work stores under
`OUTPUT_DIR/.axion_ray_work/`, run through `run_pipeline`, and written back as `.npz` + sidecar JSON in
the Axion-Sat output format. Tiles whose output already exists are skipped unless asked otherwise.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.config import InferConfig, read_yaml_mapping
from axion_ray.errors import AxionRayError, ConfigError, NpzFormatError
from axion_ray.models.registry import STAGES, stage_spec
from axion_ray.store.npz import NpzTile, export_npz_dir, list_npz_tiles, read_npz_tile, write_npz_batches
from axion_ray.store.tile_store import TileStore


@dataclass
class NpzRunSummary:
    stage: int
    total: int
    skipped_existing: int = 0
    done: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    cpu_fallbacks: int = 0
    elapsed_s: float = 0.0

    def to_text(self) -> str:
        lines = [f"stage {self.stage}: {self.done} tiles written, {len(self.failures)} failed, "
                 f"{self.skipped_existing} skipped (output exists) of {self.total}, {self.elapsed_s:.1f}s"
                 + (f", device {', '.join(self.devices)}" if self.devices else "")
                 + (f", CPU fallback for {self.cpu_fallbacks} tiles" if self.cpu_fallbacks else "")]
        lines += [f"  {name} failed: {reason}" for name, reason in sorted(self.failures.items())]
        return "\n".join(lines)


#: Axion-Sat's inference scripts default to CUDA (and say so when there is none); so does infer-npz.
AXION_SAT_DEVICE = "cuda"


def load_infer_config(path: str | Path | None, **overrides: Any) -> InferConfig:
    """InferConfig for an NPZ job: Axion-Sat's device default, then a YAML file (its `infer:` section, or
    its top-level keys that InferConfig knows), then the `overrides` that are not None."""
    data: dict[str, Any] = {"device": AXION_SAT_DEVICE}
    if path is not None:
        raw = read_yaml_mapping(path)
        known = {f.name for f in dataclasses.fields(InferConfig)}
        section = raw.get("infer", raw)
        # Axion-Sat hardware configs carry unrelated keys: take the ones we know, leave the rest.
        data.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items() if k in known})
    cfg = InferConfig(**{**data, **{k: v for k, v in overrides.items() if v is not None}})
    return dataclasses.replace(cfg, device=axion_sat_device(cfg.device))


def axion_sat_device(device: str, warn: Callable[[str], None] | None = None) -> str:
    """Axion-Sat's scripts take any torch device string (`cuda:0` too) and fall back to the CPU with a
    warning when CUDA is absent; so does infer-npz (`infer` itself stays strict)."""
    import sys

    if not re.fullmatch(r"cuda(:\d+)?", device):
        return device  # cpu, auto — or not a device, which InferConfig.validate refuses
    import torch

    if torch.cuda.is_available():
        return device
    (warn or (lambda line: print(line, file=sys.stderr)))(f"warning: CUDA not available; {device} → cpu "
                                                           "(as Axion-Sat's scripts do)")
    return "cpu"


def _read_pair(opt_path: Path, s1_path: Path) -> NpzTile:
    """One tile of Axion-Sat's Stage 3 layout: opt_v2 from its directory (the `opt_v2` key, or the
    per-band keys their Stage 3 also reads), S1 from the file of the same name in the S1 directory;
    month and biome from the opt_v2 tile's metadata, else the S1 tile's."""
    if not s1_path.exists():
        raise NpzFormatError(f"{opt_path}: no S1 tile of the same name in {s1_path.parent}")
    tile, s1_tile = read_npz_tile(opt_path), read_npz_tile(s1_path)
    optical = tile.arrays.get("opt_v2", tile.arrays.get("opt_v1"))  # s2_b* without S1 read as opt_v1
    if optical is None or "s1" not in s1_tile.arrays:
        raise NpzFormatError(f"{opt_path}: needs opt_v2 (or s2_b2…s2_b8) here and s1 in {s1_path}")
    tile.arrays = {"opt_v2": optical, "s1": s1_tile.arrays["s1"]}
    if not tile.had_sidecar:
        tile.month, tile.biome_code, tile.extra = s1_tile.month, s1_tile.biome_code, s1_tile.extra
    return tile


def run_npz_inference(stage: int, input_dir: str | Path, output_dir: str | Path, cfg: InferConfig, *,
                      skip_existing: bool = True, say: Callable[[str], None] = print, output_suffix: str = "",
                      layout: str = "arrays", s1_dir: str | Path | None = None) -> NpzRunSummary:
    """Run one stage over an NPZ tile directory and write the Axion-Sat output directory.

    `output_suffix` and `layout` give Axion-Sat's own output names and keys (their Stage 1 writes
    `<stem>_opt.npz` with per-band `s2_b*` keys: `output_suffix="_opt", layout="bands"`).
    `s1_dir` is Axion-Sat's Stage 3 layout: `input_dir` holds the opt_v2 tiles (`--opt-v2-dir`),
    `s1_dir` the S1 tiles, paired by file name; outputs carry `opt_final` + `opt_v3` and a
    `quality_status` (layout "stage3", the default then)."""
    import time

    from axion_ray.pipeline.run import run_pipeline

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    spec = stage_spec(stage)
    if s1_dir is not None:
        if stage != 3:
            raise ConfigError("--s1-dir pairs S1 tiles with opt_v2 tiles: it is Stage 3's layout (--stage 3)")
        if not Path(s1_dir).is_dir():
            raise NpzFormatError(f"S1 directory {s1_dir} does not exist or is not a directory")
        layout = "stage3" if layout == "arrays" else layout
    files = list_npz_tiles(input_dir)
    from axion_ray.models.builder import stage_provenance
    from axion_ray.pipeline.plan import stage_build_kwargs

    # A wrong checkpoint or missing weights is one line before anything is written (run_pipeline
    # checks again per tile size; the fit check is remembered, the second load costs a file read).
    stage_provenance(stage, **stage_build_kwargs(dataclasses.replace(cfg, stages=(stage,)), stage))
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = NpzRunSummary(stage, len(files))
    start = time.time()

    def read(path: Path) -> NpzTile:
        return read_npz_tile(path) if s1_dir is None else _read_pair(path, Path(s1_dir) / path.name)

    # Pass 1 validates every tile and keeps its metadata only (its arrays are read again, a batch at a
    # time, when written): memory stays bounded by the batch, not by the directory.
    groups: dict[tuple[int, int], list[tuple[Path, NpzTile]]] = defaultdict(list)
    for path in files:
        if skip_existing and (output_dir / f"{path.stem}{output_suffix}.npz").exists():
            summary.skipped_existing += 1
            continue
        try:
            tile = read(path)
        except AxionRayError as exc:
            summary.failures[path.name] = str(exc).replace(f"{path}: ", "").replace(str(path), path.name)
            continue
        missing = [k for k in spec.inputs if k not in tile.arrays]
        if missing:
            summary.failures[path.name] = f"stage {stage} needs {', '.join(missing)}; file has {', '.join(tile.arrays)}"
            continue
        size = next(iter(tile.arrays.values())).shape[1:]
        tile.arrays = dict.fromkeys(tile.arrays)
        groups[size].append((path, tile))

    work_root = output_dir / ".axion_ray_work"
    run_cfg = dataclasses.replace(cfg, stages=(stage,), skip_existing=True)
    for (h, w), pairs in sorted(groups.items()):
        tiles = [tile for _, tile in pairs]
        work = work_root / f"{h}x{w}.zarr"
        store = TileStore.create(work, len(tiles), (h, w), overwrite=True)
        store.set_tile_meta(month=[t.month for t in tiles], biome_code=[t.biome_code for t in tiles],
                            tile_id=[t.tile_id for t in tiles], tile_row=np.arange(len(tiles)),
                            tile_col=np.zeros(len(tiles)))
        store.set_sidecar_extra([t.extra for t in tiles])
        store.set_sidecar_sources([str(t.path) for t in tiles])
        inputs = list(dict.fromkeys(a for other in STAGES.values() for a in other.inputs))  # every stage input
        write_npz_batches(store, [path for path, _ in pairs], read, inputs)
        say(f"{len(tiles)} tiles of {h}x{w} px")
        result = run_pipeline(store.path, run_cfg, say=say)
        done_store = TileStore.open(store.path, mode="r")
        export_npz_dir(done_store, output_dir, spec.output, overwrite=not skip_existing, layout=layout,
                       name_suffix=output_suffix)
        stats = result.per_stage[stage]
        summary.done += stats["done"]
        summary.cpu_fallbacks += stats["cpu_fallbacks"]
        summary.devices = sorted(set(summary.devices) | set(stats["devices"]))
        for tile_index, reason in done_store.failures(spec.output).items():
            summary.failures[Path(tiles[tile_index].path).name] = reason
    shutil.rmtree(work_root, ignore_errors=True)
    summary.elapsed_s = time.time() - start
    return summary
