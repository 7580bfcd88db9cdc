"""Stage 2 training loss: spectral fidelity to the truth, geometry fidelity to Stage 1.

L = w_l1·|pred − truth| + w_sam·SAM(pred, truth) + w_ndvi·(NDVI(pred) − NDVI(truth))²
  + w_evi·(EVI(pred) − EVI(truth))² + w_edge·|∇pred − ∇opt_v1|   (Sobel gradients of every band)

The index terms are squared because checkpoints are judged by index RMSE, which outliers dominate
(dark water pixels, where NDVI is unstable); an L1 term let them grow (measured: NDVI RMSE 0.078 →
0.090 while EVI and SAM halved).

The last term is what keeps Stage 2 from moving Stage 1's edges: it asks the refinement to change
values, not shapes. All terms are means over valid pixels (finite in the truth and the input; NaN is
no-data, store/validity.py); weights come from `TrainConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from axion_ray.bands import BLUE, NIR, RED

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def ndvi_t(x: torch.Tensor) -> torch.Tensor:
    return (x[:, NIR] - x[:, RED]) / (x[:, NIR] + x[:, RED] + 1e-8)


def evi_t(x: torch.Tensor) -> torch.Tensor:
    # Denominator kept away from zero: EVI's is ~1 on reflectance data but not on arbitrary outputs.
    den = x[:, NIR] + 6.0 * x[:, RED] - 7.5 * x[:, BLUE] + 1.0
    return 2.5 * (x[:, NIR] - x[:, RED]) / torch.where(den.abs() < 0.1, torch.full_like(den, 0.1), den)


def spectral_angle_t(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Per-band Sobel gradients (B, 2C, H, W)."""
    c = x.shape[1]
    kx = _SOBEL_X.to(x)
    weight = torch.stack([kx, kx.t()]).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=c)


def stage2_loss(pred: torch.Tensor, truth: torch.Tensor, opt_v1: torch.Tensor, *, w_l1: float = 1.0,
                w_sam: float = 0.5, w_ndvi: float = 2.0, w_evi: float = 1.0, w_edge: float = 0.5
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms (floats, for logging). Invalid pixels (NaN in `truth` or `opt_v1`; the
    caller fills `opt_v1` for the model) take no part."""
    valid = (torch.isfinite(truth).all(1) & torch.isfinite(opt_v1).all(1))
    if not bool(valid.all()):
        return _masked_stage2_loss(pred, truth, opt_v1, valid, w_l1=w_l1, w_sam=w_sam, w_ndvi=w_ndvi,
                                   w_evi=w_evi, w_edge=w_edge)
    terms = {
        "l1": (pred - truth).abs().mean(),
        "sam": spectral_angle_t(pred, truth).mean(),
        "ndvi": ((ndvi_t(pred) - ndvi_t(truth)) ** 2).mean(),
        "evi": ((evi_t(pred) - evi_t(truth)) ** 2).mean(),
        "edge": (sobel(pred) - sobel(opt_v1)).abs().mean(),
    }
    weights = {"l1": w_l1, "sam": w_sam, "ndvi": w_ndvi, "evi": w_evi, "edge": w_edge}
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def _masked_stage2_loss(pred: torch.Tensor, truth: torch.Tensor, opt_v1: torch.Tensor, valid: torch.Tensor, *,
                        w_l1: float, w_sam: float, w_ndvi: float, w_evi: float, w_edge: float
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """`stage2_loss` over valid pixels; the edge term also leaves out pixels beside the no-data border."""
    n = valid.sum().clamp_min(1)
    truth = torch.where(valid[:, None], truth, pred.detach())
    opt_v1 = torch.where(valid[:, None], opt_v1, pred.detach())
    inner = -F.max_pool2d(-valid[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0.5  # 3x3 erosion

    def mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        while mask.dim() < values.dim():
            mask = mask.unsqueeze(1)
        mask = mask.expand_as(values)
        return (values * mask).sum() / mask.sum().clamp_min(1)

    terms = {
        "l1": mean((pred - truth).abs(), valid),
        "sam": (spectral_angle_t(pred, truth) * valid).sum() / n,
        "ndvi": (((ndvi_t(pred) - ndvi_t(truth)) ** 2) * valid).sum() / n,
        "evi": (((evi_t(pred) - evi_t(truth)) ** 2) * valid).sum() / n,
        "edge": mean((sobel(pred) - sobel(opt_v1)).abs(), inner),
    }
    weights = {"l1": w_l1, "sam": w_sam, "ndvi": w_ndvi, "evi": w_evi, "edge": w_edge}
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
