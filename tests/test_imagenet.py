"""ImageNet mode without ImageNet: generated image folders, random weights, timm's published figures."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from snnet.errors import SnnetError
from snnet.evaluate import evaluate_batches, evaluate_space
from snnet.families import get_family
from snnet.model import StitchableNet
from snnet.train import TrainConfig, train
from snnet.weights import read_weights, save_weights
from snnet.zoo import timm_zoo

ROOT = Path(__file__).resolve().parents[1]
TENCH, GOLDFISH, TOILET_TISSUE = "n01440764", "n01443537", "n15075141"  # ImageNet-1k classes 0, 1, 999


def snnet(*args, env=None):
    return subprocess.run([sys.executable, "-m", "snnet", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def photo(seed: int) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(40, 48, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels).resize((320, 256))


def write_folder(root: Path, placement: dict[str, list[int]]) -> Path:
    for wnid, seeds in placement.items():
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            photo(seed).save(root / wnid / f"img{seed}.JPEG")
    return root


def test_folder_classes_follow_imagenet_order_not_the_folders_present(tmp_path):
    deit = get_family("deit")
    dataset = deit.task.folder(deit, write_folder(tmp_path, {GOLDFISH: [0], TOILET_TISSUE: [1]}))
    assert sorted(target for _, target in dataset.reader.samples) == [1, 999]
    (tmp_path / "cats").mkdir()
    with pytest.raises(SnnetError, match="cats is not an ImageNet-1k class folder"):
        deit.task.folder(deit, tmp_path)


def test_streamed_batches_give_the_numbers_of_the_in_memory_path(mini):
    torch.manual_seed(0)
    net = StitchableNet.from_family(mini).eval()
    images, labels = torch.randn(24, *mini.input_size), torch.randint(0, 10, (24,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    assert evaluate_batches(net, loader, [0, 24, 60]) == evaluate_space(net, images, labels, [0, 24, 60], batch_size=8)


def test_training_from_a_dataset_matches_training_from_tensors(mini, tmp_path):
    images, labels = torch.randn(48, *mini.input_size), torch.randint(0, 10, (48,))
    config = TrainConfig(steps=4, batch_size=16, warmup_steps=1, device="cpu", bf16=False, workers=0)
    for name, data in [("tensors", lambda epoch: (images, labels)),
                       ("dataset", lambda epoch: torch.utils.data.TensorDataset(images, labels))]:
        torch.manual_seed(0)
        train(mini.build_model(mini.model_spec("mini_tiny")), data, config, tmp_path / name, show_bar=False)
    from_tensors, from_dataset = (read_weights(tmp_path / n / "model.safetensors") for n in ("tensors", "dataset"))
    assert all(torch.equal(from_tensors[k], from_dataset[k]) for k in from_tensors)


def test_an_imagenet_train_folder_feeds_training_with_imagenet_labels(tmp_path):
    write_folder(tmp_path / "train", {TENCH: [0, 1], TOILET_TISSUE: [2]})
    dataset = get_family("deit").task.train_data(get_family("deit"), data=tmp_path)(0)
    x, y = dataset[2]
    assert len(dataset) == 3 and x.shape == (3, 224, 224) and y == 999


def test_the_curated_zoo_has_the_app_shape_and_our_own_deit_costs():
    from snnet.cost import space_rows

    rows = timm_zoo()
    assert {tuple(sorted(row)) for row in rows} == {
        ("gmacs", "latency_ms", "name", "params_m", "source", "top1", "top5", "weights")}
    families = {"deit", "swin", "resnet", "levit", "vit_", "convnext", "efficientnet", "regnet", "mobilenet"}
    assert all(any(row["name"].startswith(f) for row in rows) for f in families)
    deit = get_family("deit")
    ours = {row["front"]: row for row in space_rows(deit, deit.space()) if row["kind"] == "anchor"}
    for spec in deit.anchors:
        published = next(row for row in rows if row["name"].startswith(spec.arch + "."))
        assert published["gmacs"] == pytest.approx(ours[spec.name]["gmacs"], abs=0.01)
        assert published["params_m"] == pytest.approx(ours[spec.name]["params_m"], abs=0.01)


def test_a_results_csv_joins_the_benchmark_for_gmacs(tmp_path):
    (tmp_path / "results-imagenet.csv").write_text(
        "model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation\n"
        "big_net.tag,288,80.5,19.5,95.0,5.0,\"1,014.45\",1.0,bicubic\n"
        "small_net.a_in1k,224,70.25,29.75,90.0,10.0,3.5,0.9,bicubic\n")
    (tmp_path / "benchmark-infer-amp-nchw-pt291-cu128-4090.csv").write_text(
        "model,infer_img_size,infer_samples_per_sec,infer_step_time,infer_batch_size,param_count,infer_gmacs,infer_macts\n"
        "big_net,288,10,1,256,1014.45,300.5,9\nbig_net,224,10,1,256,1014.45,180.0,9\nsmall_net,224,10,1,256,3.5,0.6,1\n")
    rows = timm_zoo(tmp_path / "results-imagenet.csv")
    assert [(r["name"], r["gmacs"], r["params_m"], r["top1"], r["top5"]) for r in rows] == [
        ("small_net.a_in1k", 0.6, 3.5, 70.25, 90.0), ("big_net.tag @288px", 300.5, 1014.45, 80.5, 95.0)]
    with pytest.raises(SnnetError, match="not a timm results CSV"):
        timm_zoo(tmp_path / "benchmark-infer-amp-nchw-pt291-cu128-4090.csv")


@pytest.fixture(scope="module")
def deit_run(tmp_path_factory):
    """A random-weight DeiT SN-Net, and a val folder whose labels some configurations get right."""
    folder = tmp_path_factory.mktemp("imagenet")
    deit = get_family("deit")
    torch.manual_seed(0)
    net = StitchableNet.from_family(deit).eval()
    save_weights(net, folder / "snnet.safetensors")
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo().label_names()
    staged = deit.task.folder(deit, write_folder(folder / "staged", {TENCH: [0, 1, 2]}))
    with torch.no_grad():
        guess = int(net(staged[0][0][None], stitch=0).argmax())
    # two images in the folder of the class anchor 0 gives the first of them, one in another class
    for seed, wnid in [(0, wnids[guess]), (1, wnids[guess]), (2, wnids[(guess + 1) % 1000])]:
        (folder / "val" / wnid).mkdir(parents=True, exist_ok=True)
        (folder / "staged" / TENCH / f"img{seed}.JPEG").rename(folder / "val" / wnid / f"img{seed}.JPEG")
    return folder, net


@pytest.mark.slow
def test_cli_evaluates_an_image_folder_into_the_cache(deit_run, tmp_path):
    from snnet.api import metrics
    from snnet.store import Store

    folder, net = deit_run
    ids = [0, 24, 56]
    result = snnet("evaluate", "--family", "deit", "--weights", str(folder / "snnet.safetensors"),
                   "--data", str(folder), "--stitches", ",".join(map(str, ids)), "--batch-size", "2",
                   "--workers", "0", "--json", env={"SNNET_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    dataset = net.family.task.folder(net.family, folder / "val")
    with torch.no_grad():
        for stitch_id in ids:  # the oracle: each configuration alone, image by image
            hits = [int(net(x[None], stitch=stitch_id).argmax()) == y for x, y in dataset]
            assert rows[stitch_id]["top1"] == pytest.approx(100 * sum(hits) / len(hits))
    assert rows[0]["top1"] >= 100 / 3  # not a vacuous zero
    cached = metrics(net, store=Store(tmp_path / "store.sqlite"), compute_missing=False, data=folder)
    assert {i: cached[i]["top1"] for i in ids} == {i: rows[i]["top1"] for i in ids}
    assert all(cached[i]["latency_ms"] > 0 for i in ids)
    # official-compat numbers are cached apart from the correct path's
    net.final_norm = False
    assert metrics(net, store=Store(tmp_path / "store.sqlite"), compute_missing=False, data=folder) == {}
    net.final_norm = True


def test_results_of_an_imagenet_family_carry_the_zoo_without_data(deit_run, tmp_path):
    from snnet.api import results
    from snnet.store import Store

    _, net = deit_run
    rows = results(net, store=Store(tmp_path / "store.sqlite"), compute_missing=False)
    assert [r["kind"] for r in rows[:71]] == ["anchor"] * 3 + ["stitch"] * 68
    assert "top1" not in rows[0]
    zoo = [r for r in rows if r["kind"] == "zoo"]
    assert len(zoo) == len(timm_zoo()) and all(r["top1"] and r["gmacs"] for r in zoo)
    with pytest.raises(SnnetError, match="give --data DIR"):
        env = os.environ.pop("SNNET_IMAGENET", None)
        try:
            results(net, store=Store(tmp_path / "store.sqlite"))
        finally:
            if env is not None:
                os.environ["SNNET_IMAGENET"] = env


@pytest.mark.slow
def test_torchrun_evaluation_sums_the_ranks_shards(tmp_path):
    env = {"OMP_NUM_THREADS": "1", "SNNET_HOME": str(tmp_path)}
    alone = snnet("evaluate", "--family", "mini", "--split", "val", "--stitches", "0,24,60", "--json", env=env)
    assert alone.returncode == 0, alone.stderr
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "snnet", "evaluate",
         "--family", "mini", "--split", "val", "--stitches", "0,24,60", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env})
    assert result.returncode == 0, result.stderr[-2000:]
    shards = {row["id"]: row for row in json.loads(result.stdout)}  # rank 0 alone prints
    for row in json.loads(alone.stdout):
        assert shards[row["id"]]["top1"] == row["top1"] and shards[row["id"]]["top5"] == row["top5"]
        assert shards[row["id"]]["loss"] == pytest.approx(row["loss"], rel=1e-5)
