import json
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from axion_ray.cli import main
from axion_ray.store import TileStore


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, fragment):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert fragment in lines[0] and "Traceback" not in err


def test_synth_status_metrics_export_import(tmp_path, capsys):
    store = tmp_path / "aoi.zarr"
    code, out, _ = run(capsys, "synth", str(store), "--rows", "2", "--cols", "2", "--tile-size", "32", "--seed", "1")
    assert code == 0 and "wrote 4 tiles" in out

    code, out, _ = run(capsys, "status", str(store))
    assert code == 0 and "opt_v1" in out and "opt_v2" in out
    code, out, _ = run(capsys, "status", str(store), "--json")
    assert json.loads(out)["arrays"]["opt_v1"]["done"] == 4

    code, out, _ = run(capsys, "metrics", str(store), "--pred", "opt_v1", "--baseline", "none", "--truth", "s2_truth",
                       "--json", str(tmp_path / "m.json"))
    assert code == 0 and "geometry" not in json.loads((tmp_path / "m.json").read_text())
    code, out, _ = run(capsys, "metrics", str(store), "--pred", "opt_v1", "--baseline", "opt_v1",
                       "--json", str(tmp_path / "m.json"), "--overwrite")  # replaces the file written above
    assert code == 0
    figures = json.loads((tmp_path / "m.json").read_text())
    for key in ("ndvi_rmse", "evi_rmse", "sam_rad", "mse", "mae", "rmse", "psnr_db", "ssim"):
        assert key in figures["pred_metrics"]
    assert figures["geometry"]["edge_disp_mean_px"] == 0  # a store compared with itself
    assert figures["composite_score"] == 0 and figures["constraints_pass"]

    code, out, _ = run(capsys, "export-npz", str(store), str(tmp_path / "npz"), "--array", "opt_v1")
    assert code == 0 and "wrote 4 opt_v1 tiles" in out
    code, out, _ = run(capsys, "import-npz", str(tmp_path / "npz"), str(tmp_path / "back.zarr"))
    assert code == 0
    back = TileStore.open(tmp_path / "back.zarr")
    np.testing.assert_array_equal(back.read("opt_v1", range(4)), TileStore.open(store).read("opt_v1", range(4)))
    assert back.tile_meta()["month"].tolist() == TileStore.open(store).tile_meta()["month"].tolist()


def test_status_lists_failure_reasons(tmp_path, capsys):
    store = TileStore.create(tmp_path / "s.zarr", 3, 8)
    store.mark_failed("opt_v1", [2], "S1 tile is all zeros")
    code, out, _ = run(capsys, "status", str(store.path))
    assert code == 0 and "tile 2 failed: S1 tile is all zeros" in out


def _npz_dir(tmp_path, **arrays_and_sidecar):
    sidecar = arrays_and_sidecar.pop("sidecar", {})
    d = tmp_path / "in"
    d.mkdir()
    np.savez(d / "tile_0001.npz", **arrays_and_sidecar)
    (d / "tile_0001.json").write_text(json.dumps(sidecar))
    return d


GOOD = np.full((4, 8, 8), 0.2, np.float32)


@pytest.mark.parametrize("setup, fragment", [
    (lambda t: ["status", str(t / "missing.zarr")], "no tile store"),
    (lambda t: ["import-npz", str(t / "nope"), str(t / "s.zarr")], "does not exist"),
    (lambda t: ["import-npz", str(_npz_dir(t, opt_v1=GOOD[:2])), str(t / "s.zarr")], "must be (4, H, W)"),
    (lambda t: ["import-npz", str(_npz_dir(t, opt_v1=GOOD * np.nan)), str(t / "s.zarr")], "NaN/Inf"),
    (lambda t: ["import-npz", str(_npz_dir(t, opt_v1=GOOD, sidecar={"month": "foo"})), str(t / "s.zarr")], "month 'foo'"),
    (lambda t: ["import-npz", str(_npz_dir(t, opt_v1=GOOD, sidecar={"biome_code": 99})), str(t / "s.zarr")], "biome_code 99"),
    (lambda t: ["synth", str(t / "s.zarr"), "--biomes", "99"], "biome codes must be 0–15"),
    (lambda t: ["synth", str(t / "s.zarr"), "--rows", "x"], "invalid int value"),
    (lambda t: ["export-npz", str(t / "missing.zarr"), str(t / "out")], "no tile store"),
    (lambda t: ["nonsense"], "invalid choice"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, setup, fragment):
    argv = setup(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits by itself
        code = exc.code
    _, err = capsys.readouterr()
    assert_user_error(code, err, fragment)


def test_corrupt_npz_and_foreign_store(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    (d / "tile_0001.npz").write_bytes(b"PK\x03\x04 broken")
    code, _, err = run(capsys, "import-npz", str(d), str(tmp_path / "s.zarr"))
    assert_user_error(code, err, "not a readable .npz")

    zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2).create_array("x", shape=(1,), dtype="f4")
    code, _, err = run(capsys, "status", str(tmp_path / "v2.zarr"))
    assert_user_error(code, err, "Zarr v2")
    zarr.open_group(tmp_path / "v3.zarr", mode="w", zarr_format=3).create_array("x", shape=(1,), dtype="f4")
    code, _, err = run(capsys, "metrics", str(tmp_path / "v3.zarr"))
    assert_user_error(code, err, "not an Axion-Ray tile store")


def test_metrics_refuse_nan_truth_and_missing_outputs(tmp_path, capsys):
    store = TileStore.create(tmp_path / "s.zarr", 2, 16, with_truth=True)
    store.write("opt_v1", [0, 1], np.full((2, 4, 16, 16), 0.1, np.float32))
    code, _, err = run(capsys, "metrics", str(store.path), "--pred", "opt_v2")
    assert_user_error(code, err, "no tile has opt_v2")
    store.write("opt_v2", [0, 1], np.full((2, 4, 16, 16), 0.1, np.float32))
    code, _, err = run(capsys, "metrics", str(store.path))  # s2_truth never written: NaN
    assert_user_error(code, err, "s2_truth has NaN/Inf")


def test_console_script_runs_without_traceback_and_help_is_cheap(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "axion_ray.cli", "status", str(tmp_path / "x.zarr")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    check = ("import sys, axion_ray.cli as c;"
             "c.build_parser();"
             "heavy=[m for m in ('torch','terratorch','ray','zarr') if m in sys.modules];"
             "print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_mistakes_found_before_ray_starts_leave_nothing_behind(tmp_path, capsys):
    from axion_ray.config import SynthConfig
    from axion_ray.store.synth import synthesize_aoi

    store = synthesize_aoi(tmp_path / "t.zarr", SynthConfig(rows=1, cols=2, tile_size=16, seed=1)).path
    started = time.time()
    assert main(["tune", "stage2", "--train", store, "--val", store, "--samples", "0", "--out",
                 str(tmp_path / "sweep")]) == 2
    assert "--samples" in capsys.readouterr().err and not (tmp_path / "sweep").exists()
    assert main(["train", "stage2", "--train", store, "--val", store, "--out", str(tmp_path / "run"),
                 "--allow-random-init"]) == 2
    assert "also a training store" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert time.time() - started < 60  # no Ray was started for either


def test_report_files_are_never_replaced_without_overwrite_nor_written_into_an_input(small_aoi, tmp_path, capsys):
    out = tmp_path / "m.json"
    argv = ["metrics", small_aoi.path, "--pred", "opt_v1", "--baseline", "none"]
    assert main([*argv, "--json", str(out)]) == 0
    first = out.read_text()
    out.write_text("the user's notes")
    assert main([*argv, "--json", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "the user's notes"
    assert main([*argv, "--json", str(out), "--overwrite"]) == 0 and out.read_text() == first
    assert main([*argv, "--json", f"{small_aoi.path}/m.json"]) == 2  # inside the input store
    assert "lies inside the input" in capsys.readouterr().err
    assert main(["classify", "latency", "--model", "resnet18", "--batch-sizes", "1", "--out", str(out)]) == 2
    assert out.read_text() == first  # refused before any model was built
