"""Test-time augmentation: a stage's output averaged over flips (and transposes) of its input tiles.

Why: the regression stages train on the 8 flips/rotations of every batch (train/loop.dihedral), so each
view is an equally good estimate whose errors — speckle read as texture, a class boundary guessed —
differ from view to view; their mean is a small ensemble at no training cost. Measured on the chain
bench (bench/RESULTS.md, (J)): 4 views take `opt_v1`'s NDVI RMSE 0.0679 → 0.0675 and `opt_v3`'s 0.0661
→ 0.0657, at ~4x Stage 1's model time (on the less trained Stage 1 of run (I): 0.0713 → 0.0701). So it
is an option, off by default. Only models trained on those views are wrapped (`tta_views`): the refiner
of Stage 2 trains without them, and the per-pixel calibrator would return the same image from every view.

Hand-written rather than ttach (segmentation_models_pytorch's companion): our stages take several
named images plus per-tile scalars, which ttach's single-tensor wrappers do not.
"""

from __future__ import annotations

import torch
from torch import nn

from axion_ray.models.common import show_stage_attributes

#: Views per setting: (transpose H and W, flip W, flip H). 4 keeps the tile's shape; 8 is the dihedral group.
_VIEWS = {
    1: ((False, False, False),),
    4: ((False, False, False), (False, True, False), (False, False, True), (False, True, True)),
    8: tuple((t, fw, fh) for t in (False, True) for fw in (False, True) for fh in (False, True)),
}
TTA_CHOICES: tuple[int, ...] = tuple(_VIEWS)


def _flip_dims(view: tuple[bool, bool, bool]) -> list[int]:
    return [d for d, on in ((-1, view[1]), (-2, view[2])) if on]


def _forward_view(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    x = x.transpose(-1, -2) if view[0] else x
    return x.flip(_flip_dims(view))


def _inverse_view(x: torch.Tensor, view: tuple[bool, bool, bool]) -> torch.Tensor:
    x = x.flip(_flip_dims(view))
    return x.transpose(-1, -2) if view[0] else x


def tta_views(family: str, backbone: str | None, tta: int) -> int:
    """How many views a stage of `family` built on `backbone` runs with when `tta` are asked: the
    regression UNet stages take them all; every other model runs once."""
    return tta if family == "regress" and backbone != "pixel" else 1


class DihedralTTA(nn.Module):
    """`model`'s forward, run on `views` flips/transposes of every image input (4-D tensors) and the
    outputs mapped back and averaged. Per-tile inputs (month, biome) pass unchanged."""

    def __init__(self, model: nn.Module, views: int):
        super().__init__()
        if views not in _VIEWS:
            raise ValueError(f"test-time views must be one of {TTA_CHOICES}, got {views}")
        self.model = model
        self.views = _VIEWS[views]
        show_stage_attributes(self, model)
        self.provenance = {**getattr(model, "provenance", {}), "tta": views}

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        def view_of(x, view):
            return _forward_view(x, view) if isinstance(x, torch.Tensor) and x.ndim == 4 else x

        total = None
        for view in self.views:
            out = self.model(*(view_of(a, view) for a in args), **{k: view_of(v, view) for k, v in kwargs.items()})
            out = _inverse_view(out.float(), view)
            total = out if total is None else total + out
        return total / len(self.views)
