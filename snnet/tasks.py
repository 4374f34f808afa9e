"""Tasks: what a family is trained and evaluated on, and everything that follows from it.

A task owns its training data, its fixed evaluation sets and their cache key, its class labels,
the images a visitor can try, how an uploaded image is prepared, and the zoo of separately trained
networks shown beside the stitches. Two tasks exist: the embedded cluttered digits (offline, every
family built here) and ImageNet-1k image folders (timm anchors, timm's published zoo).
"""
import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional

import torch

from snnet.data import (DIGIT_MEAN, DIGIT_STD, DIGITS_VERSION, EVAL_RENDERS, EVAL_SEEDS, data_config,
                        digits_eval_set, digits_split, digits_train_epoch, image_folder, imagenet_class_map,
                        split_folder)
from snnet.errors import SnnetError


class Task:
    name: str
    zoo_name: str  # what the curve calls the networks trained alone
    default_split: str  # the split results are shown on
    offline: bool  # data made here: its families are built from scratch by build-default

    def train_data(self, family, seed: int = 0, data=None):
        """epoch -> (images, labels) held in memory, or -> a dataset of (image, label) to shuffle."""
        raise NotImplementedError

    def fit_images(self, family, samples: int, data=None, batch_size: int = 64) -> Iterator[torch.Tensor]:
        """A few hundred training images in batches, seen as inference sees them: the samples a
        least-squares initialisation of the stitching layers is fitted on."""
        raise NotImplementedError

    def eval_set(self, family, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed evaluation set held in memory."""
        raise SnnetError(f"family {family.name} evaluates on an image folder, not an in-memory set: give --data DIR")

    def eval_folder(self, family, split: str, data=None, needed: bool = True):
        """The image folder a split is evaluated on; None for in-memory sets, or when none is given
        and none is needed (only cached figures are asked for)."""
        return None

    def preview_set(self, family, split: str) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed part of the evaluation set that previews its figures in a fraction of the time
        (a fine-tune shows it first); None where the task has none."""
        return None

    def eval_set_key(self, family, split: str, dataset=None) -> dict:
        """What identifies an evaluation set, for the metrics cache."""
        raise NotImplementedError

    def class_labels(self, family) -> list[str]:
        raise NotImplementedError

    def sample_images(self, family) -> list[tuple[str, "Image.Image"]]:
        """Built-in images to try a family on."""
        raise NotImplementedError

    def preprocess(self, family, image) -> torch.Tensor:
        """One image (any mode, any size) as the family's training data looked: (C, H, W), normalised."""
        raise NotImplementedError

    def zoo(self, family, store, split: str, zoo_csv: Optional[Path] = None) -> list[dict]:
        """The networks trained alone to compare stitches with."""
        raise NotImplementedError


class DigitsTask(Task):
    """Handwritten digits rendered in clutter on 32x32 canvases (snnet/data.py); the test split is fixed."""

    name = "digits"
    zoo_name = "zoo (trained alone)"
    default_split = "test"
    offline = True

    def train_data(self, family, seed: int = 0, data=None):
        return lambda epoch: digits_train_epoch(epoch, seed)

    def fit_images(self, family, samples: int, data=None, batch_size: int = 64) -> Iterator[torch.Tensor]:
        images, _ = digits_split("train", 1, seed=777)  # a seed apart from training's epochs
        return iter(images[:samples].split(batch_size))

    def eval_set(self, family, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return digits_eval_set(split)

    def preview_set(self, family, split: str) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = digits_eval_set(split)
        every_digit_once = len(labels) // EVAL_RENDERS[split]  # the set is render after render of all digits
        return images[:every_digit_once], labels[:every_digit_once]

    def eval_set_key(self, family, split: str, dataset=None) -> dict:
        return {"task": "digits", "version": DIGITS_VERSION, "renders": EVAL_RENDERS.get(split),
                "seed": EVAL_SEEDS.get(split)}

    def class_labels(self, family) -> list[str]:
        return [str(i) for i in range(10)]

    def sample_images(self, family) -> list[tuple[str, "Image.Image"]]:
        from PIL import Image

        images, labels = digits_eval_set("test")
        pixels = ((images[:8, 0] * DIGIT_STD[0] + DIGIT_MEAN[0]).clamp(0, 1) * 255).round().to(torch.uint8)
        return [(f"test #{i} (label {int(labels[i])})", Image.fromarray(pixels[i].numpy()))
                for i in range(len(pixels))]

    def preprocess(self, family, image) -> torch.Tensor:
        from PIL import ImageOps, ImageStat

        from snnet._timm import timm  # noqa: F401  (timm's data transforms need torchvision)
        from timm.data import create_transform

        _, height, width = family.input_size
        image = image.convert("L")
        # Training digits are light ink on a dark canvas; most photos and scans of digits are dark
        # ink on light paper, so those are inverted first.
        if ImageStat.Stat(image).mean[0] > 127:
            image = ImageOps.invert(image)
        transform = create_transform(input_size=(1, height, width), interpolation="bilinear",
                                     mean=DIGIT_MEAN, std=DIGIT_STD, crop_pct=1.0)
        return transform(image)

    def zoo(self, family, store, split: str, zoo_csv: Optional[Path] = None) -> list[dict]:
        return store.get_zoo(family.name, split)


class ImageNetTask(Task):
    """ImageNet-1k in folders (DIR/<split>/<wnid>/*.JPEG, given by --data or $SNNET_IMAGENET), read
    with the anchors' timm transforms; classes keep ImageNet-1k's own indices."""

    name = "imagenet"
    zoo_name = "timm zoo"
    default_split = "val"
    offline = False

    def folder(self, family, root: Path, training: bool = False):
        root = Path(root)
        class_map = imagenet_class_map(root) if root.is_dir() else None
        return image_folder(root, family, training, class_map)

    def train_data(self, family, seed: int = 0, data=None):
        dataset = self.folder(family, split_folder(family, data, "train"), training=True)
        return lambda epoch: dataset

    def fit_images(self, family, samples: int, data=None, batch_size: int = 32) -> Iterator[torch.Tensor]:
        # evaluation transforms: the fit sees the images as inference will, and is reproducible
        dataset = self.folder(family, split_folder(family, data, "train"))
        chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:samples]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, chosen.tolist()), batch_size=batch_size)
        return (images for images, _ in loader)

    def eval_folder(self, family, split: str, data=None, needed: bool = True):
        if not (needed or data or os.environ.get("SNNET_IMAGENET")):
            return None
        return self.folder(family, split_folder(family, data, split))

    def eval_set_key(self, family, split: str, dataset=None) -> dict:
        if dataset is None:
            return {"task": self.name}
        root = Path(dataset.reader.root)
        listing = hashlib.sha256()
        for path, target in dataset.reader.samples:
            listing.update(f"{Path(path).relative_to(root).as_posix()}:{target};".encode())
        return {"task": self.name, "images": len(dataset), "listing": listing.hexdigest()[:16]}

    def class_labels(self, family) -> list[str]:
        from snnet._timm import timm  # noqa: F401
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(family.num_classes)]

    def sample_images(self, family) -> list[tuple[str, "Image.Image"]]:
        from PIL import Image
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()  # scikit-learn's two bundled photos
        return [(Path(name).name, Image.fromarray(array)) for name, array in zip(bunch.filenames, bunch.images)]

    def preprocess(self, family, image) -> torch.Tensor:
        from snnet._timm import timm  # noqa: F401
        from timm.data import create_transform

        return create_transform(**data_config(family))(image.convert("RGB"))

    def zoo(self, family, store, split: str, zoo_csv: Optional[Path] = None) -> list[dict]:
        from snnet.zoo import timm_zoo

        return timm_zoo(zoo_csv)  # published figures, curated or from timm's results CSV


DIGITS = DigitsTask()
IMAGENET = ImageNetTask()
