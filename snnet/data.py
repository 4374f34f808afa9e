"""Data: the embedded cluttered-digits renders (offline, from scikit-learn), ImageNet-style folders
read with timm's transforms, and single images. Which data a family uses is its task's business
(snnet/tasks.py).

Cluttered digits: each 8x8 handwritten digit of scikit-learn's bundled set is scaled, rotated and
placed on a 32x32 canvas beside dimmed fragments of other digits, under Gaussian noise. Renders are
a pure function of the source digits and a seed. Splits are by source digit, so no digit image is
seen in two splits; the test split is fixed, training renders fresh variations every epoch.
"""
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from snnet.errors import SnnetError

SPLITS = ("train", "val", "test")
DIGIT_MEAN, DIGIT_STD = (0.5,), (0.5,)


@dataclass(frozen=True)
class Clutter:
    """How hard a render is; the defaults separate the mini anchors (see BENCHMARKS.md / README)."""

    canvas: int = 32
    min_size: float = 16.0  # rendered digit height in pixels
    max_size: float = 26.0
    max_rotation_deg: float = 29.0
    fragments: int = 2
    fragment_brightness: tuple[float, float] = (0.4, 0.8)
    noise_std: float = 0.1


@dataclass(frozen=True)
class Split:
    digits: torch.Tensor  # (N, 8, 8) in [0, 1]
    labels: torch.Tensor  # (N,)


@lru_cache(maxsize=1)
def source_splits(seed: int = 0, val_per_class: int = 18, test_per_class: int = 36) -> dict[str, Split]:
    """Source digits split per class: 360 test, 180 val, the rest (1257) train."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digits = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    chosen = {split: [] for split in SPLITS}
    for label in range(10):
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen["test"].append(members[:test_per_class])
        chosen["val"].append(members[test_per_class: test_per_class + val_per_class])
        chosen["train"].append(members[test_per_class + val_per_class:])
    return {split: Split(digits[torch.cat(ix).sort().values], labels[torch.cat(ix).sort().values])
            for split, ix in chosen.items()}


def _place(sources: torch.Tensor, scale: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor,
           canvas: int) -> torch.Tensor:
    """Warp 8x8 sources onto the canvas: `scale` is the digit's size in canvas pixels."""
    # affine_grid maps output coordinates in [-1, 1] to input coordinates in [-1, 1].
    zoom = canvas / scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([zoom * cos, -zoom * sin, -zoom * (cos * shift[:, 0] - sin * shift[:, 1])], 1),
        torch.stack([zoom * sin, zoom * cos, -zoom * (sin * shift[:, 0] + cos * shift[:, 1])], 1),
    ], 1)
    grid = F.affine_grid(theta, (len(sources), 1, canvas, canvas), align_corners=False)
    return F.grid_sample(sources[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def render(digits: torch.Tensor, pool: torch.Tensor, generator: torch.Generator,
           clutter: Clutter = Clutter()) -> torch.Tensor:
    """Render digits (N, 8, 8) as (N, 1, canvas, canvas) images in [0, 1]; fragments come from `pool`."""
    n, c = len(digits), clutter.canvas

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=generator)

    scale = uniform(clutter.min_size, clutter.max_size, n)
    angle = uniform(-1, 1, n) * math.radians(clutter.max_rotation_deg)
    room = (1 - scale / c).clamp_min(0)[:, None]  # keep the digit inside the canvas
    image = _place(digits, scale, angle, uniform(-1, 1, n, 2) * room, c)
    for _ in range(clutter.fragments):
        other = pool[torch.randint(len(pool), (n,), generator=generator)]
        # a fragment: another digit cut by a random half-plane, pushed towards the border
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
        normal = uniform(0, 2 * math.pi, n)
        keep = (torch.cos(normal)[:, None, None] * xs + torch.sin(normal)[:, None, None] * ys) > uniform(-0.2, 0.4, n)[:, None, None]
        fragment = _place(other * keep, uniform(clutter.min_size, clutter.max_size, n),
                          uniform(-math.pi, math.pi, n), uniform(-0.9, 0.9, n, 2), c)
        image = torch.maximum(image, fragment * uniform(*clutter.fragment_brightness, n)[:, None, None, None])
    image = image + clutter.noise_std * torch.randn(image.shape, generator=generator)
    return image.clamp(0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - DIGIT_MEAN[0]) / DIGIT_STD[0]


def digits_split(split: str, renders: int, seed: int, clutter: Clutter = Clutter()) -> tuple[torch.Tensor, torch.Tensor]:
    """`renders` renders of every source digit of a split, normalised, with their labels."""
    if split not in SPLITS:
        raise SnnetError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
    sources = source_splits()
    part = sources[split]
    generator = torch.Generator().manual_seed(seed)
    digits = part.digits.repeat(renders, 1, 1)
    images = render(digits, sources[split].digits, generator, clutter)
    return normalize(images), part.labels.repeat(renders)


# Fixed evaluation sets: 10 renders of the 360 test digits (3600 images), 5 of the 180 val digits.
EVAL_RENDERS = {"val": 5, "test": 10}
EVAL_SEEDS = {"val": 1001, "test": 2002}


def digits_eval_set(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if split not in EVAL_RENDERS:
        raise SnnetError(f"split {split!r} has no fixed evaluation set: choose val or test")
    return digits_split(split, EVAL_RENDERS[split], EVAL_SEEDS[split])


def digits_train_epoch(epoch: int, seed: int = 0, renders: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh variations of every training digit, different every epoch, reproducible from the seed."""
    return digits_split("train", renders, seed * 100_003 + epoch + 1)


# Bump when rendering changes, so cached metrics of older test sets are never reused.
DIGITS_VERSION = 1


def split_folder(family, data, split: str) -> Path:
    """DIR/<split> when it exists (an ImageNet root), else DIR itself (already a split folder)."""
    data = data or os.environ.get("SNNET_IMAGENET")
    if not data:
        raise SnnetError(f"family {family.name} needs ImageNet-style images: give --data DIR "
                         f"(holding {split}/<wnid>/*.JPEG) or set SNNET_IMAGENET")
    root = Path(data)
    return root / split if (root / split).is_dir() else root


WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16/32-bit grey: scaled, not clipped, to 8 bits


def _to_8_bit(image) -> "Image.Image":
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def load_image(path) -> "Image.Image":
    """Open any image Pillow reads; a file it cannot read is one clear error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return _to_8_bit(image) if image.mode in WIDE_MODES else image.copy()
    except FileNotFoundError:
        raise SnnetError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise SnnetError(f"{path}: not a readable image ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def data_config(family) -> dict:
    """timm's data config of the family's anchors (input size, interpolation, crop, mean, std)."""
    if family.name not in _DATA_CONFIGS:  # by name: families outside the registry (recombined ones) too
        from snnet._timm import timm  # noqa: F401  (timm.data needs the torchvision fix)
        from timm.data import resolve_data_config

        _DATA_CONFIGS[family.name] = resolve_data_config({}, model=family.build_anchor(0, device="meta"))
    return dict(_DATA_CONFIGS[family.name])


_DATA_CONFIGS: dict[str, dict] = {}


def imagenet_class_map(root: Path) -> dict[str, int]:
    """ImageNet-1k's own class index for each <wnid> folder: a folder holding a subset of the classes
    must still give class 0 to n01440764, not to whichever folder sorts first."""
    from timm.data import ImageNetInfo

    index = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    unknown = [name for name in folders if name not in index]
    if unknown:
        raise SnnetError(f"{root / unknown[0]} is not an ImageNet-1k class folder (expected a wnid such as n01440764)")
    return index


def image_folder(root, family, training: bool = False, class_map: Optional[dict[str, int]] = None):
    """An ImageNet-style folder (root/<class>/<image>) with the family's timm transforms; classes
    are numbered by `class_map` (folder name -> index), else in sorted order."""
    from snnet._timm import timm  # noqa: F401  (timm.data needs the torchvision fix)
    from timm.data import ImageDataset, create_transform

    root = Path(root)
    if not root.is_dir():
        raise SnnetError(f"image folder {root} not found")
    dataset = ImageDataset(str(root), class_map=class_map,
                           transform=create_transform(**data_config(family), is_training=training))
    if len(dataset) == 0:
        raise SnnetError(f"image folder {root} holds no images in class sub-folders")
    return dataset
