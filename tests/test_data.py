import io

import numpy as np
import pytest
import torch
from PIL import Image

from snnet.data import (digits_eval_set, digits_train_epoch, load_image, render,
                        source_splits)
from snnet.errors import SnnetError


def test_splits_are_disjoint_by_source_digit_and_cover_the_set():
    splits = source_splits()
    flat = {name: {tuple(d.flatten().tolist()) for d in split.digits} for name, split in splits.items()}
    assert not flat["train"] & flat["val"] and not flat["train"] & flat["test"] and not flat["val"] & flat["test"]
    assert sum(len(s.labels) for s in splits.values()) == 1797
    assert torch.equal(splits["test"].labels.bincount(), torch.full((10,), 36))


def test_test_split_is_fixed_large_and_balanced():
    images, labels = digits_eval_set("test")
    again, _ = digits_eval_set("test")
    assert torch.equal(images, again)
    assert images.shape == (3600, 1, 32, 32) and len(images) >= 3000
    assert torch.equal(labels.bincount(), torch.full((10,), 360))
    assert -1.0 <= images.min() and images.max() <= 1.0


def test_training_renders_change_every_epoch_and_reproduce():
    first, labels = digits_train_epoch(0)
    assert torch.equal(first, digits_train_epoch(0)[0])
    assert not torch.equal(first, digits_train_epoch(1)[0])
    assert not torch.equal(first, digits_train_epoch(0, seed=5)[0])
    assert len(first) == 10 * len(source_splits()["train"].labels) and torch.equal(labels[:5], labels[1257:1262])


def test_render_places_the_digit_inside_the_canvas():
    digit = torch.zeros(1, 8, 8)
    digit[0, 2:6, 3:5] = 1.0
    generator = torch.Generator().manual_seed(0)
    from snnet.data import Clutter

    clean = Clutter(fragments=0, noise_std=0.0)
    images = render(digit.repeat(50, 1, 1), digit, generator, clean)
    assert images.shape == (50, 1, 32, 32)
    assert (images.flatten(1).max(1).values > 0.5).all()  # every digit is visible
    edge = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
    assert edge.max() < 0.05  # and none is cut by the border


def _encoded(image: Image.Image, fmt: str) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "JPEG"), ("P", "GIF"),
                                       ("I;16", "PNG"), ("1", "BMP"), ("CMYK", "JPEG")])
def test_any_mode_and_format_becomes_a_model_input(mini, mode, fmt):
    image = Image.new("L", (61, 47), 0)
    image.paste(255, (20, 10, 30, 40))
    image = load_image(_encoded(image.convert(mode), fmt))
    x = mini.task.preprocess(mini, image)
    assert x.shape == (1, 32, 32) and torch.isfinite(x).all()


def test_16_bit_images_keep_their_contrast(mini):
    grey = np.linspace(0, 255, 48 * 48).reshape(48, 48).round().astype(np.uint8)
    wide = Image.fromarray(grey.astype(np.uint16) * 257)  # the same picture in 16 bits ("I;16")
    assert wide.mode == "I;16"
    loaded = load_image(_encoded(wide, "PNG"))
    assert loaded.mode == "L" and np.array_equal(np.asarray(loaded), grey)
    assert torch.equal(mini.task.preprocess(mini, loaded), mini.task.preprocess(mini, Image.fromarray(grey)))


def test_dark_ink_on_paper_is_inverted_like_the_training_digits(mini):
    light = Image.new("L", (40, 40), 0)
    light.paste(255, (15, 5, 25, 35))
    dark = Image.fromarray(255 - np.asarray(light))
    assert torch.allclose(mini.task.preprocess(mini, light), mini.task.preprocess(mini, dark), atol=1e-6)


def test_unreadable_images_name_the_file(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(SnnetError, match=r"broken.png: not a readable image"):
        load_image(broken)
    with pytest.raises(SnnetError, match=r"missing.jpg: no such file"):
        load_image(tmp_path / "missing.jpg")


def test_an_imagenet_style_folder_gets_the_anchors_transforms(tmp_path):
    from snnet.data import data_config, image_folder
    from snnet.families import get_family

    deit = get_family("deit")
    for label, colour in [("n01440764", "red"), ("n01443537", "blue")]:
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.new("RGB", (300 + 40 * i, 260), colour).save(tmp_path / label / f"{i}.JPEG")
    dataset = image_folder(tmp_path, deit)
    assert len(dataset) == 4
    x, y = dataset[3]
    assert x.shape == (3, 224, 224) and y == 1
    config = data_config(deit)
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    assert config["input_size"] == (3, 224, 224) and config["interpolation"] == "bicubic"
    assert config["mean"] == IMAGENET_DEFAULT_MEAN and config["std"] == IMAGENET_DEFAULT_STD
    with pytest.raises(SnnetError, match="not found"):
        image_folder(tmp_path / "nope", deit)
