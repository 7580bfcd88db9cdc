"""A stage as the mean of members (models/ensemble.py): one file, rebuilt exactly, refused when it is not one."""

from __future__ import annotations

import pytest
import torch

from axion_ray.errors import CheckpointError
from axion_ray.models import build_stage
from axion_ray.models.builder import stage_provenance
from axion_ray.models.ensemble import MemberMean, is_ensemble, write_ensemble
from axion_ray.models.tta import DihedralTTA


def _inputs(n: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 2, size, size, generator=g) * 4 - 14, torch.tensor([3, 9][:n]), torch.tensor([4, 12][:n])


def _export(path, stage: int = 1, seed: int = 0, width: int = 8):
    """A trained-looking regression export: random decoder weights (an untrained Stage 1 is flat)."""
    torch.manual_seed(seed)
    model = build_stage(stage, kind="regress", encoder="unet", width=width, allow_random_init=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save({"model_state_dict": model.state_dict(), "step": 100 + seed,
                "config": {"stage": stage, "kind": "regress", "preset": "tiny", "encoder": "unet", "width": width,
                           "norm": model.norm}}, path)
    return path


def test_an_ensemble_file_is_the_mean_of_its_members_and_says_so(tmp_path):
    members = [_export(tmp_path / f"m{i}.pt", seed=i) for i in range(3)]
    path = write_ensemble(members, tmp_path / "stage1.pt")
    assert not list(tmp_path.glob(".*partial"))
    s1, month, biome = _inputs()
    with torch.no_grad():
        alone = [build_stage(1, checkpoint=str(m))(s1, month, biome) for m in members]
        mean = build_stage(1, checkpoint=str(path))(s1, month, biome)
    torch.testing.assert_close(mean, torch.stack(alone).mean(0))
    assert not torch.allclose(alone[0], alone[1])  # the members differ, so the mean is not any one of them

    model = build_stage(1, checkpoint=str(path))
    assert isinstance(model, MemberMean) and model.INPUTS == ("s1", "month", "biome_code")
    prov = stage_provenance(1, checkpoint=str(path))
    assert prov["members"] == model.provenance["members"] == 3
    assert prov["checkpoint"] == str(path) and prov["model"] == "unet_regress" and prov["random_init"] is False
    assert len(prov["checkpoint_sha256"]) == 64  # the file's own digest, not a member's
    # Test-time views wrap the mean, as they wrap one model.
    viewed = build_stage(1, checkpoint=str(path), tta=4)
    assert isinstance(viewed, DihedralTTA) and viewed.provenance["tta"] == 4 and viewed.provenance["members"] == 3


def test_what_is_not_an_ensemble_of_one_stage_is_refused(tmp_path):
    one = _export(tmp_path / "s1.pt", stage=1)
    three = _export(tmp_path / "s3.pt", stage=3)
    with pytest.raises(CheckpointError, match="not a member like the first"):
        write_ensemble([one, three], tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="two members or more"):
        write_ensemble([one], tmp_path / "alone.pt")
    pair = write_ensemble([one, _export(tmp_path / "s1b.pt", seed=1)], tmp_path / "pair.pt")
    with pytest.raises(CheckpointError, match="itself an ensemble"):
        write_ensemble([pair, one], tmp_path / "nested.pt")
    assert not (tmp_path / "mixed.pt").exists() and not (tmp_path / "nested.pt").exists()

    cut = torch.load(pair, weights_only=True)
    cut["members"] = cut["members"][:1]  # a file that says two members and carries one
    torch.save(cut, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="an ensemble of 2 members but carries 1 member record"):
        build_stage(1, checkpoint=str(tmp_path / "cut.pt"))
    with pytest.raises(CheckpointError, match="stage 1 checkpoint, not stage 3"):
        stage_provenance(3, checkpoint=str(pair))
    hostile = torch.load(pair, weights_only=True)
    hostile["members"] = ["not a member", "nor this"]  # a hand-edited file: one line, not a traceback
    torch.save(hostile, tmp_path / "hostile.pt")
    with pytest.raises(CheckpointError, match="member records that are not dicts"):
        build_stage(1, checkpoint=str(tmp_path / "hostile.pt"))
    assert not is_ensemble({"members": "2"}) and not is_ensemble({"members": True}) and is_ensemble({"members": 2})
