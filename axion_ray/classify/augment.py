"""The inspection team's "field simulator": conveyor variation as torchvision v2 transforms.

Orientation and position (RandomAffine), lighting and strobe (ColorJitter), and motion or focus blur
(GaussianBlur, or a horizontal motion-blur kernel along the belt). Applied per batch on uint8 tensors on
the training worker, so augmentation runs where the model trains and scales with the workers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRENGTHS = ("none", "light", "heavy")


class MotionBlur(torch.nn.Module):
    """Horizontal box blur of a random odd length (the belt moves horizontally), with probability `p`."""

    def __init__(self, max_length: int = 7, p: float = 0.3):
        super().__init__()
        self.max_length, self.p = max_length, p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p or self.max_length < 3:
            return img
        length = int(torch.randint(1, self.max_length // 2 + 1, ())) * 2 + 1
        x = img.float().unsqueeze(0) if img.dim() == 3 else img.float()
        kernel = torch.full((x.shape[1], 1, 1, length), 1.0 / length, device=x.device)
        out = F.conv2d(F.pad(x, (length // 2, length // 2, 0, 0), mode="replicate"), kernel, groups=x.shape[1])
        out = out.round().clamp(0, 255).to(img.dtype)
        return out.squeeze(0) if img.dim() == 3 else out


def field_simulator(strength: str = "light"):
    """The transform for one image (3, H, W) uint8; `none` is the identity."""
    from torchvision.transforms import v2

    if strength not in STRENGTHS:
        raise ValueError(f"augmentation must be one of {', '.join(STRENGTHS)}, got {strength!r}")
    if strength == "none":
        return v2.Identity()
    heavy = strength == "heavy"
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=180 if heavy else 20, translate=(0.1, 0.1) if heavy else (0.05, 0.05),
                        scale=(0.85, 1.15) if heavy else (0.95, 1.05)),
        v2.ColorJitter(brightness=0.4 if heavy else 0.15, contrast=0.4 if heavy else 0.15,
                       saturation=0.3 if heavy else 0.1, hue=0.03 if heavy else 0.0),
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5 if heavy else 0.8))], p=0.5 if heavy else 0.2),
        MotionBlur(max_length=7 if heavy else 3, p=0.3 if heavy else 0.0),
    ])


def augment_batch(images: torch.Tensor, transform) -> torch.Tensor:
    """Each image of a (B, 3, H, W) uint8 batch through its own random draw of `transform`."""
    return torch.stack([transform(img) for img in images])
