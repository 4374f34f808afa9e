"""Tasks: each family's data, evaluation sets, labels, samples and preprocessing come from its task."""
import pytest
import torch
from PIL import Image

from snnet.errors import SnnetError
from snnet.families import family_names, get_family
from snnet.model import StitchableNet
from snnet.tasks import DIGITS, IMAGENET
from snnet.train import TrainConfig, train


def test_every_family_has_one_of_the_two_tasks():
    tasks = {name: get_family(name).task for name in family_names()}
    assert {name for name, task in tasks.items() if task is DIGITS} == {"mini", "mini-resnet"}
    assert all(task in (DIGITS, IMAGENET) for task in tasks.values())


@pytest.mark.parametrize("family_name", ["mini", "mini-resnet"])
def test_the_digits_task_feeds_any_of_its_families(family_name):
    family = get_family(family_name)
    images, labels = family.task.eval_set(family, "test")
    assert images.shape == (3600, *family.input_size) and set(labels.tolist()) == set(range(10))
    fit = list(family.task.fit_images(family, 100, batch_size=64))
    assert [len(batch) for batch in fit] == [64, 36]
    assert family.task.class_labels(family) == [str(i) for i in range(10)]
    name, image = family.task.sample_images(family)[0]
    assert family.task.preprocess(family, image).shape == family.input_size
    # the cache key tells the splits apart, and the test set stays what it was
    assert family.task.eval_set_key(family, "test") != family.task.eval_set_key(family, "val")
    assert family.task.eval_set_key(family, "test")["renders"] == 10


def test_the_imagenet_task_names_its_folder_and_its_classes(monkeypatch):
    monkeypatch.delenv("SNNET_IMAGENET", raising=False)
    deit = get_family("deit")
    with pytest.raises(SnnetError, match="needs ImageNet-style images"):
        IMAGENET.train_data(deit, data=None)
    with pytest.raises(SnnetError, match="not an in-memory set"):
        IMAGENET.eval_set(deit, "val")
    assert IMAGENET.eval_folder(deit, "val", data=None, needed=False) is None
    labels = IMAGENET.class_labels(deit)
    assert len(labels) == 1000 and labels[1] == "goldfish, Carassius auratus"
    photo = Image.new("RGB", (300, 200), "red")
    assert IMAGENET.preprocess(deit, photo).shape == (3, 224, 224)


@pytest.mark.parametrize("update", [False, True])
def test_snnet_training_keeps_the_anchors_batch_norm_statistics_unless_told(update, tmp_path):
    family = get_family("mini-resnet")
    torch.manual_seed(0)
    net = StitchableNet.from_family(family)
    before = {name: value.clone() for name, value in net.anchors.state_dict().items() if "running_" in name}
    config = TrainConfig(steps=3, batch_size=32, warmup_steps=1, checkpoint_every=100, device="cpu", bf16=False,
                         update_norm_stats=update)
    train(net, family.task.train_data(family), config, tmp_path, show_bar=False)
    after = net.anchors.state_dict()
    unchanged = all(torch.equal(value, after[name]) for name, value in before.items())
    assert unchanged != update


def test_weights_hash_covers_batch_norm_step_counts():
    from snnet.weights import weights_hash

    family = get_family("mini-resnet")
    torch.manual_seed(0)
    model = family.build_model(family.anchors[0])
    first = weights_hash(model)
    model.bn1.num_batches_tracked += 1  # a 0-dim tensor
    assert weights_hash(model) != first


def test_the_digits_preview_set_is_every_test_digit_once_from_the_evaluation_set(mini):
    from snnet.data import source_splits

    images, labels = mini.task.eval_set(mini, "test")
    preview_images, preview_labels = mini.task.preview_set(mini, "test")
    assert torch.equal(preview_labels, source_splits()["test"].labels)
    assert torch.equal(preview_images, images[:len(preview_labels)])
    assert len(preview_labels) * 10 == len(labels)
