"""Fuzz: corrupt a store or an NPZ directory, run the commands on it — every exit is 0, 1 or 2 (never a
traceback), and nothing the corruption did not touch changes.

A seeded generator (reproducible: the case number is in every failure message) picks a file of a small
store or NPZ directory and flips bytes in it, truncates it, empties it, deletes it, or replaces an
array's metadata with a wrong dtype or shape; then runs `status`, `metrics`, `export-npz`, `mosaic`,
`footprints` (stores) or `import-npz` (NPZ directories) in-process. The read-only commands must leave
every file of the input as it was, and write only under their own outputs.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from axion_ray.cli import main
from axion_ray.config import SynthConfig
from axion_ray.store.npz import export_npz_dir
from axion_ray.store.synth import synthesize_aoi

STORE_CASES = 150
NPZ_CASES = 120


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _corrupt(path: Path, rng: random.Random) -> str:
    data = path.read_bytes()
    kind = rng.choice(["flip", "truncate", "empty", "delete", "meta"] if path.name == "zarr.json" else
                      ["flip", "truncate", "empty", "delete"])
    if kind == "flip" and data:
        raw = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    elif kind == "truncate" and data:
        path.write_bytes(data[:rng.randrange(len(data))])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "delete":
        path.unlink()
    elif kind == "meta":
        try:
            meta = json.loads(data)
        except ValueError:
            meta = None
        if isinstance(meta, dict) and meta.get("node_type") == "array":
            if rng.random() < 0.5:
                meta["data_type"] = rng.choice(["int16", "float64", "bool", "uint8"])
            else:
                meta["shape"] = [max(1, int(s) + rng.choice([-1, 1, 3])) for s in meta["shape"]]
            path.write_text(json.dumps(meta))
        else:
            path.write_bytes(b"{")
    return kind


def _run(argv: list[str], case: str) -> int:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exits
        code = exc.code
    except Exception as exc:  # a traceback would reach the user: the thing this suite exists to find
        pytest.fail(f"{case}: {' '.join(argv[:1])} raised {type(exc).__name__}: {exc}")
    assert code in (0, 1, 2), f"{case}: exit {code}"
    return int(code)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    store = synthesize_aoi(root / "s.zarr", SynthConfig(rows=2, cols=3, tile_size=16, overlap=4, seed=9))
    store.write("opt_v2", np.arange(6), store.read("opt_v1", np.arange(6)))
    store.set_provenance("opt_v2", stage="stage2", model="copy")
    export_npz_dir(store, root / "npz", "opt_v1")
    return root


def test_corrupt_stores_never_raise_and_change_nothing(pristine, tmp_path, capsys):
    rng = random.Random(20261202)
    codes = []
    for n in range(STORE_CASES):
        work = tmp_path / f"c{n}"
        shutil.copytree(pristine / "s.zarr", work / "s.zarr")
        files = sorted(p for p in (work / "s.zarr").rglob("*") if p.is_file())
        target = rng.choice(files)
        kind = _corrupt(target, rng)
        case = f"case {n}: {kind} {target.relative_to(work)}"
        before = _digest(work / "s.zarr")
        store = str(work / "s.zarr")
        for argv in (["status", store], ["status", store, "--json"], ["metrics", store],
                     ["export-npz", store, str(work / "out"), "--array", "opt_v2"],
                     ["mosaic", store, "--array", "opt_v2", "--out", str(work / "m.tif")],
                     ["footprints", store, "--out", str(work / "t.geojson")]):
            codes.append(_run(argv, case))
        assert _digest(work / "s.zarr") == before, f"{case}: a read-only command changed the store"
        capsys.readouterr()
        shutil.rmtree(work)
    assert codes.count(0) and codes.count(2)  # some runs survive the damage, some are refused


def test_corrupt_npz_directories_never_raise(pristine, tmp_path, capsys):
    rng = random.Random(7)
    for n in range(NPZ_CASES):
        work = tmp_path / f"n{n}"
        shutil.copytree(pristine / "npz", work / "npz")
        target = rng.choice(sorted((work / "npz").iterdir()))
        kind = _corrupt(target, rng)
        case = f"npz case {n}: {kind} {target.name}"
        before = _digest(work / "npz")
        _run(["import-npz", str(work / "npz"), str(work / "s.zarr")], case)
        assert _digest(work / "npz") == before, f"{case}: import changed its input"
        capsys.readouterr()
        shutil.rmtree(work)
