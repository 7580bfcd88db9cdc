"""Image-folder datasets (`DATA/{train,val}/<class>/*.png|jpg`) and a generator of fruit-like test images.

Decoding runs in a thread pool (Pillow releases the GIL while decoding), so a folder of JPEGs loads at
the speed of the cores. An unreadable image is skipped and listed, never fatal; a missing split or an
empty class is a user error. Every image becomes (3, size, size) uint8, resized with antialiasing.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axion_ray.errors import ImageDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_CLASSES = ("clean", "pit")
MAYBE = "maybe"


@dataclass
class ImageSet:
    """Decoded images of one split with their labels (indices into `class_names`) and source paths."""

    images: np.ndarray                 # (N, 3, S, S) uint8
    labels: np.ndarray                 # (N,) int64
    paths: list[str]
    class_names: tuple[str, ...]
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}

    def __len__(self) -> int:
        return len(self.labels)


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """One image file → (3, size, size) uint8 RGB. Raises on an unreadable file."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def decode_images(paths: list[str], size: int, workers: int | None = None
                  ) -> tuple[np.ndarray, list[int], list[dict[str, str]]]:
    """Decode in parallel; returns the stacked images, the indices that decoded, and what was skipped."""
    def one(path: str):
        try:
            return decode_image(path, size), None
        except Exception as exc:  # any decoder failure: a truncated file, a non-image, a bad mode
            return None, f"{type(exc).__name__}: {exc}"

    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, paths))
    ok = [i for i, (img, _) in enumerate(results) if img is not None]
    skipped = [{"path": paths[i], "reason": err} for i, (_, err) in enumerate(results) if err is not None]
    images = np.stack([results[i][0] for i in ok]) if ok else np.empty((0, 3, size, size), np.uint8)
    return images, ok, skipped


def load_split(data_dir: str | Path, split: str, class_names: tuple[str, ...] = DEFAULT_CLASSES,
               image_size: int = 224) -> ImageSet:
    """`DATA/<split>/<class>/*` for the given classes, in that label order."""
    root = Path(data_dir) / split
    if not root.is_dir():
        raise ImageDataError(f"no {split!r} split: {root} is not a directory (expected DATA/{split}/<class>/*.png)")
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            raise ImageDataError(f"class {name!r} missing in {root} (found: {', '.join(present) or 'none'}); "
                                 f"set the class names with --classes")
        files = list_images(folder)
        if not files:
            raise ImageDataError(f"class {name!r} in {root} has no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    images, ok, skipped = decode_images(paths, image_size)
    if not ok:
        raise ImageDataError(f"no image of {root} could be read ({len(skipped)} unreadable)")
    return ImageSet(images, np.asarray(labels, np.int64)[ok], [paths[i] for i in ok], tuple(class_names), skipped)


def synthesize_fruit_dataset(out_dir: str | Path, n_per_class: int = 60, *, size: int = 64, ambiguous: float = 0.15,
                             val_fraction: float = 0.3, seed: int = 0) -> Path:
    """Conveyor-like test images: a red disc on a belt, with (`pit`) or without (`clean`) a dark pit.

    A fraction `ambiguous` of each class is hard on purpose: the pit is small and faint, or a clean
    fruit carries a dark blemish of the same look — the cases the two-stage workflow should mine as
    `maybe`. Also varies position, size, hue, lighting and blur. Writes PNGs under
    `OUT/{train,val}/{clean,pit}/`; returns OUT.
    """
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    for cls in DEFAULT_CLASSES:
        for i in range(n_per_class):
            split = "val" if i < int(round(n_per_class * val_fraction)) else "train"
            hard = rng.random() < ambiguous
            belt = tuple(int(v) for v in rng.integers(150, 200, 3))
            im = Image.new("RGB", (size, size), belt)
            draw = ImageDraw.Draw(im)
            r = size * rng.uniform(0.28, 0.36)
            cx, cy = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
            red = (int(rng.integers(150, 230)), int(rng.integers(10, 60)), int(rng.integers(20, 70)))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=red)
            mark = cls == "pit" or (hard and cls == "clean")  # a clean hard case has a pit-like blemish
            if mark:
                pr = r * (rng.uniform(0.12, 0.18) if hard else rng.uniform(0.3, 0.45))
                shade = 0.75 if hard else 0.25  # how dark relative to the fruit
                px, py = cx + rng.uniform(-0.3, 0.3) * r, cy + rng.uniform(-0.3, 0.3) * r
                draw.ellipse([px - pr, py - pr, px + pr, py + pr], fill=tuple(int(c * shade) for c in red))
            im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
            arr = np.asarray(im, np.float32) * rng.uniform(0.8, 1.15) + rng.normal(0, 6, (size, size, 3))
            folder = out / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"{cls}_{i:04d}{'_hard' if hard else ''}.png")
    return out
