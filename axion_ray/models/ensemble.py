"""A stage as the mean of independently trained members: one checkpoint file, one model.

Why: on the chain bench (bench/RESULTS.md, (Y)) four Stage 1 models trained by the same command differ
by up to 0.002 in NDVI RMSE on unseen AOIs, and the mean of any two of them beat both members on every
figure. Their errors where speckle hides a boundary or a class differ from run to run, so averaging
removes part of them. `axion-ray train chain --stage1-members N` trains N members side by side (the
workers split between them instead of one data-parallel run) and writes them into one export. Measured
at the same compute on 2 CPU workers, the two members' mean scored what one run does (each member lost
what half the tiles a step costs), so the chain's default stays one model.

The file is a §4 checkpoint: `model_state_dict` holds every member's tensors under `members.{i}.` (a
plain state dict of `MemberMean`), `config` names the stage, kind and encoder the members share plus
`members: N`, and `members` keeps what each member's own export said besides its tensors (config,
step, metrics, provenance), so each member is rebuilt exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from axion_ray.errors import CheckpointError
from axion_ray.models.common import show_stage_attributes
from axion_ray.models.weights import Checkpoint, save_checkpoint


class MemberMean(nn.Module):
    """The mean of its members' outputs; inputs pass to every member unchanged."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two members or more, got {len(members)}")
        self.members = nn.ModuleList(members)
        show_stage_attributes(self, members[0])

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            out = member(*args, **kwargs).float()
            total = out if total is None else total + out
        return total / len(self.members)


def ensemble_provenance(first_member: dict[str, Any], ckpt: Checkpoint, members: int) -> dict[str, Any]:
    """An ensemble's provenance: its first member's, with the file's own path and digest and the count."""
    return {**first_member, "checkpoint": ckpt.path, "checkpoint_sha256": ckpt.sha256, "members": members}


def is_ensemble(config: dict[str, Any]) -> bool:
    members = config.get("members")
    return isinstance(members, int) and not isinstance(members, bool) and members >= 2


def member_checkpoints(ckpt: Checkpoint) -> list[Checkpoint]:
    """Each member of an ensemble file as the checkpoint it was exported as: the file's path, and its digest
    with the member's index (what a checkpoint's fit check is remembered by, models/builder)."""
    members, n = ckpt.meta.get("members"), ckpt.config["members"]
    if not isinstance(members, list) or len(members) != n or not all(isinstance(m, dict) for m in members):
        found = ("no member records" if not isinstance(members, list) else
                 f"{len(members)} member record(s)" if len(members) != n else "member records that are not dicts")
        raise CheckpointError(f"checkpoint {ckpt.path} is an ensemble of {n} members but carries {found}: it was cut "
                              "short or altered; export it again")
    out = []
    for i, member in enumerate(members):
        prefix = f"members.{i}."
        state = {k[len(prefix):]: v for k, v in ckpt.state_dict.items() if k.startswith(prefix)}
        out.append(Checkpoint(ckpt.path, f"{ckpt.sha256}:{i}" if ckpt.sha256 else "", state, dict(member.get("config") or {}),
                              {k: v for k, v in member.items() if k != "config"}))
    return out


def write_ensemble(member_exports: Sequence[str | Path], dest: str | Path) -> Path:
    """One ensemble file from two or more exports of one stage and kind (written atomically)."""
    exports = [torch.load(p, map_location="cpu", weights_only=True) for p in member_exports]
    if len(exports) < 2:
        raise ValueError(f"an ensemble needs two members or more, got {len(exports)}")
    shared = {k: exports[0]["config"].get(k) for k in ("stage", "kind", "preset", "encoder")}
    for path, export in zip(member_exports, exports):
        theirs = {k: export["config"].get(k) for k in shared}
        if theirs != shared:
            raise CheckpointError(f"{path} is not a member like the first ({theirs} against {shared}): an ensemble "
                                  "averages models of one stage, kind and encoder")
        if export["config"].get("members"):
            raise CheckpointError(f"{path} is itself an ensemble: give its members instead")
    state = {f"members.{i}.{k}": v for i, export in enumerate(exports) for k, v in export["model_state_dict"].items()}
    described = [{k: v for k, v in export.items() if k != "model_state_dict"} for export in exports]
    ensemble = {"model_state_dict": state, "config": {**shared, "members": len(exports)}, "members": described}
    return save_checkpoint(ensemble, dest)
