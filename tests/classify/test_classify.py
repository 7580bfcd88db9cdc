"""Inspection classifiers: data, augmentation, mining rules, thresholds, and the whole two-stage workflow
on generated fruit images (discs with and without a dark pit, plus a deliberately ambiguous fraction)."""

import json

import numpy as np
import pytest
import torch

from axion_ray.classify.augment import augment_batch, field_simulator
from axion_ray.classify.data import ImageSet, load_split, synthesize_fruit_dataset
from axion_ray.classify.mining import decide, mine_maybe, optimise_thresholds
from axion_ray.classify.models import build_classifier, resolve_model_name
from axion_ray.cli import main
from axion_ray.errors import ConfigError, ImageDataError, WeightsNotFoundError


@pytest.fixture(scope="module")
def fruit(tmp_path_factory):
    root = synthesize_fruit_dataset(tmp_path_factory.mktemp("fruit") / "data", n_per_class=120, size=48,
                                    ambiguous=0.2, seed=3)
    (root / "train" / "clean" / "broken.png").write_bytes(b"not a png at all")
    return root


def test_image_folders_load_with_clear_errors(fruit, tmp_path):
    train = load_split(fruit, "train", image_size=32)
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == np.uint8
    assert set(np.unique(train.labels)) == {0, 1}
    assert [s["path"].endswith("broken.png") for s in train.skipped] == [True]  # skipped and listed
    with pytest.raises(ImageDataError, match="no 'test' split"):
        load_split(fruit, "test")
    with pytest.raises(ImageDataError, match="class 'stone' missing"):
        load_split(fruit, "train", ("clean", "stone"))
    (tmp_path / "train" / "clean").mkdir(parents=True)
    (tmp_path / "train" / "pit").mkdir()
    with pytest.raises(ImageDataError, match="'clean' .* has no images"):
        load_split(tmp_path, "train")


def test_field_simulator_strengths():
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(augment_batch(x, field_simulator("none")), x)
    heavy = augment_batch(x, field_simulator("heavy"))
    assert heavy.shape == x.shape and heavy.dtype == torch.uint8 and not torch.equal(heavy, x)
    with pytest.raises(ValueError):
        field_simulator("extreme")


def test_presets_and_weights_policy():
    assert resolve_model_name("convnextv2_tiny")[0] == "convnextv2_tiny.fcmae_ft_in22k_in1k"
    assert resolve_model_name("vit_small_patch14_dinov2")[1] == "linear_probe"
    assert resolve_model_name("resnet18")[0].startswith("resnet18.")  # timm's default tag
    with pytest.raises(ConfigError, match="unknown classifier"):
        resolve_model_name("no_such_net")
    with pytest.raises(WeightsNotFoundError, match="timm/efficientnet_b2.ra_in1k"):
        build_classifier("efficientnet_b2", 2)
    probe = build_classifier("vit_small_patch14_dinov2", 3, image_size=28, allow_random_init=True)
    trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("head") for n in trainable)
    assert probe.provenance["random_init"] is True
    full = build_classifier("vit_small_patch14_dinov2", 3, image_size=28, mode="finetune", allow_random_init=True)
    assert all(p.requires_grad for p in full.parameters())


def test_mining_rule_and_thresholds_follow_the_team_definitions():
    images = ImageSet(np.zeros((6, 3, 4, 4), np.uint8), np.array([0, 0, 0, 1, 1, 1]), [str(i) for i in range(6)],
                      ("clean", "pit"))
    p_pit = np.array([0.1, 0.5, 0.9, 0.9, 0.36, 0.2])   # sure-right, uncertain, wrong, sure-right, uncertain, wrong
    mined = mine_maybe(images, np.stack([1 - p_pit, p_pit], 1))
    assert mined.moved.tolist() == [False, True, True, False, True, True]
    assert mined.images.class_names == ("clean", "pit", "maybe") and mined.images.labels.tolist() == [0, 2, 2, 1, 2, 2]
    assert mined.stats() == {"total": 6, "moved": 4, "pct": pytest.approx(66.667, abs=1e-2),
                             "moved_by_class": {"clean": 2, "pit": 2}}

    names = ("clean", "pit", "maybe")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300) * 0.5
    probs[np.arange(300), labels] += 0.5
    result = optimise_thresholds(probs, labels, names, recall_floor=0.95)
    pred = decide(probs, result["pit"], result["maybe"], names)
    assert result["recall_floor_met"] and (pred[labels == 1] == 1).mean() >= 0.95
    assert result["accuracy"] == pytest.approx((pred == labels).mean())
    impossible = optimise_thresholds(probs, labels, names, recall_floor=1.01)
    assert impossible["recall_floor_met"] is False


@pytest.mark.slow
def test_two_stage_workflow_learns_mines_and_meets_the_recall_floor(local_ray, fruit, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["classify", "two-stage", "--data", str(fruit), "--out", str(run), "--model", "resnet10t",
            "--allow-random-init", "--image-size", "48", "--epochs", "8", "--head-epochs", "4",
            "--batch-size", "16", "--lr", "3e-3", "--augment", "light"]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["binary_accuracy"] >= 0.75                     # chance is 0.5; ~20% are ambiguous on purpose
    assert set(metrics["per_class"]) == {"clean", "pit", "maybe"}
    for split in ("train", "val"):
        st = metrics["mining"][split]
        assert st["total"] > 0 and 0 < st["moved"] < st["total"] and st["pct"] == pytest.approx(100 * st["moved"] / st["total"])
    mined = json.loads((run / "mined.json").read_text())["images"]
    entries = mined["train"] + mined["val"]
    hard = [e["moved"] for e in entries if "_hard" in e["path"]]
    easy = [e["moved"] for e in entries if "_hard" not in e["path"]]
    # Mining finds the ambiguous images: hard ones are moved more often than easy ones, by a two-proportion
    # z-test at z >= 3 (p < 0.002). A fixed ratio flaked: 8 random-init epochs under DDP are not bit-stable.
    pooled = np.mean(hard + easy)
    z = (np.mean(hard) - np.mean(easy)) / np.sqrt(pooled * (1 - pooled) * (1 / len(hard) + 1 / len(easy)))
    assert z >= 3, (np.mean(hard), np.mean(easy), len(hard), len(easy))
    easy_val = [e for e in mined["val"] if "_hard" not in e["path"]]
    assert np.mean([(e["p_pit"] >= 0.5) == (e["original"] == "pit") for e in easy_val]) >= 0.9
    th = metrics["thresholds"]
    assert th["recall_floor_met"] and metrics["per_class"]["pit"]["recall"] >= 0.95
    report = (run / "REPORT.md").read_text()
    for section in ("# Model Report: 2-Stage Robust Training", "## Mining Statistics", "## Deployment Recommendation",
                    "RANDOM INIT", "| **Pit** |", "### Artifacts"):
        assert section in report
    assert "CANDIDATE" in report or "DO NOT DEPLOY" in report      # a random-init run is never "deploy"

    # Batch inference on Ray Data: every image gets a row, an unreadable one its error.
    import pyarrow.parquet as pq

    images = fruit / "train"
    assert main(["classify", "infer", "--run", str(run), "--images", str(images), "--out", str(tmp_path / "p.parquet"),
                 "--batch-size", "16"]) == 0
    table = pq.read_table(tmp_path / "p.parquet").to_pandas()
    assert len(table) == len(list(images.rglob("*.png")))
    assert {"path", "class", "p_clean", "p_pit", "p_maybe", "maybe", "error"} <= set(table.columns)
    broken = table[table.path.str.endswith("broken.png")]
    assert broken["class"].isna().all() and broken["error"].notna().all()
    ok = table[table.error.isna()]
    assert np.allclose(ok[["p_clean", "p_pit", "p_maybe"]].sum(1), 1.0, atol=1e-4)
    assert (ok["maybe"] == (ok["class"] == "maybe")).all()

    # Latency and the comparison table, from measured files only.
    assert main(["classify", "latency", "--model", "resnet10t", "--batch-sizes", "1,2", "--device", "cpu",
                 "--image-size", "48", "--out", str(tmp_path / "lat.json")]) == 0
    lat = json.loads((tmp_path / "lat.json").read_text())
    assert [r["batch_size"] for r in lat["results"]] == [1, 2] and lat["params"] > 1e6
    assert all(r["p95_ms_per_image"] >= r["p50_ms_per_image"] > 0 for r in lat["results"])
    capsys.readouterr()
    assert main(["classify", "compare", "--runs", str(run), "--latency", str(tmp_path / "lat.json"),
                 "--batch-size", "1"]) == 0
    table_md = capsys.readouterr().out
    assert "| resnet10t |" in table_md and f"{metrics['accuracy_3class']:.2%}" in table_md and "ms (cpu)" in table_md
