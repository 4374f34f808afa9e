"""The recombination of timm models with their own weights files, on an ImageNet folder: the
resnet50-resnext50 preset, with weights made here (no hub), on a handful of images."""
import subprocess
import sys

import pytest
import torch
from PIL import Image

from snnet.evolve.presets import prepare
from snnet.evolve.search import search
from snnet.evolve.train import StitchTrainConfig, TaskTrainConfig
from snnet.weights import save_weights

WNIDS = ("n01440764", "n01443537")  # ImageNet-1k classes 0 and 1
IMAGES = 6  # per split


def _folder(root, split: str, count: int) -> None:
    generator = torch.Generator().manual_seed(len(split))
    for i in range(count):
        folder = root / split / WNIDS[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (torch.rand(48, 64, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.JPEG")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Random-weight ResNet-50 and ResNeXt-50 in files named as timm's, and an ImageNet folder."""
    from snnet.families.recombined import resnet50_resnext50

    root = tmp_path_factory.mktemp("timm-pair")
    family = resnet50_resnext50()
    torch.manual_seed(0)
    parents = [family.build_anchor(i) for i in range(2)]
    for spec, model in zip(family.anchors, parents):
        save_weights(model, root / "weights" / f"{spec.arch}.safetensors")
    _folder(root, "train", 2 * IMAGES)
    _folder(root, "val", IMAGES)
    return root, parents


SMALL = dict(train_config=StitchTrainConfig(steps=1, batch_size=2), task_config=TaskTrainConfig(steps=1, batch_size=2))


@pytest.mark.slow
def test_timm_parents_from_files_are_recombined_and_searched(made, tmp_path, monkeypatch):
    root, parents = made
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    net, info, sets = prepare("resnet50-resnext50", quiet=True, weights=root / "weights", data=str(root),
                              images=IMAGES, **SMALL)
    assert len(info["matching"]["pairs"]) >= 2
    assert list((tmp_path / "evolve").glob("resnet50-resnext50-*/stitch_layers.safetensors"))
    images, labels = sets.search()
    test_set = sets.test()
    assert len(labels) == IMAGES and len(test_set[1]) == IMAGES
    result = search(net, images, labels, budget=3, seed=0, test_set=test_set)
    assert [p["name"] for p in result["parents"]] == ["resnet50", "resnext50_32x4d"]
    assert result["front"] and result["test_front"]
    # the all-A and all-B offspring are the parents read from the files
    for index, (parent, found) in enumerate(zip(parents, result["parents"])):
        with torch.no_grad():
            expected = 100.0 * float((parent(images).argmax(1) != labels).float().mean())
        assert found["error"] == pytest.approx(expected)


def test_the_timm_preset_without_weights_says_where_to_put_them_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "snnet", "evolve", "--preset", "resnet50-resnext50", "--weights",
                           str(tmp_path), "--data", str(tmp_path), "--json"], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "SNNET_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "no weights for anchor resnet50" in done.stderr and len(done.stderr.strip().splitlines()) == 1
