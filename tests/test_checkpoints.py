"""Anchor weights and official SN-Net checkpoints, with random weights made here (nothing downloaded)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from snnet._timm import timm
from snnet.checkpoints import load_anchors, read_state_dict
from snnet.errors import SnnetError
from snnet.families import get_family

ROOT = Path(__file__).resolve().parents[1]


def snnet(*args, env=None):
    return subprocess.run([sys.executable, "-m", "snnet", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def random_timm(arch: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False).eval()


@pytest.fixture(scope="module")
def deit():
    return get_family("deit")


@pytest.fixture(scope="module")
def timm_anchors(deit):
    return [random_timm(spec.arch, seed) for seed, spec in enumerate(deit.anchors)]


def test_anchor_weights_in_each_timm_format_load_offline(deit, timm_anchors, tmp_path):
    tiny, small, base = (model.state_dict() for model in timm_anchors)
    save_file(tiny, str(tmp_path / "deit_tiny_patch16_224.safetensors"))
    torch.save({"model": small}, tmp_path / "deit_small_patch16_224.pth")  # a training checkpoint
    torch.save(base, tmp_path / "deit_base_patch16_224-b5f2ef4d.pth")  # the original release's name, bare
    loaded = load_anchors(deit, tmp_path)
    for model, reference in zip(loaded, timm_anchors):
        expected = reference.state_dict()
        assert all(torch.equal(model.state_dict()[name], expected[name]) for name in expected)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": print}, path)  # pickles a callable
    with pytest.raises(SnnetError, match="not a weights-only torch checkpoint"):
        read_state_dict(path)


def test_missing_anchor_weights_fail_fast_naming_the_file(tmp_path):
    started = time.perf_counter()
    # no HF_HUB_OFFLINE here: the hub probe itself must give up quickly on a machine without network
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    result = subprocess.run([sys.executable, "-m", "snnet", "init", "--family", "deit", "--data", str(tmp_path),
                             "--weights", str(tmp_path), "--out", str(tmp_path / "x.safetensors")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**env, "HF_HOME": str(tmp_path / "hf"), "PYTHONWARNINGS": "ignore"})
    elapsed = time.perf_counter() - started
    assert result.returncode == 2 and elapsed < 10
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith(f"error: no weights for anchor deit_tiny: {tmp_path}/deit_tiny_patch16_224.safetensors")
    assert "huggingface.co/timm/deit_tiny_patch16_224.fb_in1k" in line


def test_missing_snnet_weights_name_the_ways_to_get_them():
    result = snnet("predict", "--family", "deit", "--stitch", "0", "any.jpg")
    assert result.returncode == 2
    assert "checkpoints/deit/snnet.safetensors is missing" in result.stderr
    assert "convert-official" in result.stderr and "--weights" in result.stderr


# The official-format oracle: the released layout built from random weights, and the stitched
# forward written out by hand from plain timm modules and an nn.Linear (not through StitchableNet).

STITCHES = [24, 56]  # Ti->S at blocks (7, 7) with layer 6, S->B with a layer of the second pair


@pytest.fixture(scope="module")
def official(deit, timm_anchors, tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    torch.manual_seed(7)
    state, linears = {}, {}
    for i, model in enumerate(timm_anchors):
        state.update({f"anchors.{i}.{name}": t for name, t in model.state_dict().items()})
    for pair, (front, back) in enumerate([(0, 1), (1, 2)]):
        for window in range(11):
            linear = torch.nn.Linear(timm_anchors[front].embed_dim, timm_anchors[back].embed_dim)
            linears[(pair, window)] = linear
            state[f"stitch_layers.{pair}.{window}.transform.weight"] = linear.weight.detach().clone()
            state[f"stitch_layers.{pair}.{window}.transform.bias"] = linear.bias.detach().clone()
    torch.save({"model": state, "epoch": 49}, folder / "snnet_deit.pth")
    image = Image.radial_gradient("L").convert("RGB").resize((300, 260))
    image.save(folder / "photo.png")
    result = snnet("convert-official", str(folder / "snnet_deit.pth"), "--out", str(folder / "snnet_deit.safetensors"))
    assert result.returncode == 0, result.stderr
    assert "22 stitching layers" in result.stdout
    return folder, linears


@torch.no_grad()
def hand_stitched(anchors, linears, stitch_id: int, x: torch.Tensor, final_norm: bool) -> torch.Tensor:
    """The reference's forward for the default DeiT space, written out from its configuration list."""
    pair, rest = (0, stitch_id - 3) if stitch_id < 37 else (1, stitch_id - 37)
    positions = [(0, 0), (0, 1), (1, 0), (1, 1)] + [p for w in range(1, 11) for p in [(w, w + 1), (w + 1, w), (w + 1, w + 1)]]
    windows = [0] * 4 + [w for w in range(1, 11) for _ in range(3)]
    (j, k), window = positions[rest], windows[rest]
    front, back = anchors[pair], anchors[pair + 1]
    tokens = front._pos_embed(front.patch_embed(x))
    for block in front.blocks[: j + 1]:
        tokens = block(tokens)
    tokens = linears[(pair, window)](tokens)
    for block in back.blocks[k:]:
        tokens = block(tokens)
    if final_norm:
        tokens = back.norm(tokens)
    return back.forward_head(tokens)


@pytest.mark.slow
@pytest.mark.parametrize("official_compat", [False, True])
def test_an_official_checkpoint_imports_and_predicts_like_the_hand_built_stitch(
        deit, timm_anchors, official, official_compat):
    from snnet.api import load_net, predict

    folder, linears = official
    net = load_net("deit", folder / "snnet_deit.safetensors", official_compat=official_compat)
    x = deit.task.preprocess(deit, Image.open(folder / "photo.png"))[None]
    for stitch_id in STITCHES:
        expected = hand_stitched(timm_anchors, linears, stitch_id, x, final_norm=not official_compat)
        with torch.no_grad():
            assert torch.allclose(net(x, stitch=stitch_id), expected, atol=1e-4, rtol=1e-4)
        probs = expected.softmax(1)[0]
        top = predict(net, stitch_id, [folder / "photo.png"])[0]["top5"]
        assert [p["class_index"] for p in top] == probs.topk(5).indices.tolist()
        assert [p["prob"] for p in top] == pytest.approx(probs.topk(5).values.tolist(), rel=1e-4)
    # the two paths differ: the switch really changes the computation
    other = hand_stitched(timm_anchors, linears, STITCHES[0], x, final_norm=official_compat)
    with torch.no_grad():
        assert not torch.allclose(net(x, stitch=STITCHES[0]), other, atol=1e-3)


def test_a_checkpoint_of_another_layout_is_one_clear_error(tmp_path):
    torch.save({"model": {"stitch_layers.0.11.transform.weight": torch.zeros(384, 192)}}, tmp_path / "odd.pth")
    result = snnet("convert-official", str(tmp_path / "odd.pth"), "--out", str(tmp_path / "x.safetensors"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "stitch_layers.0.11.transform.weight has no stitching layer" in result.stderr


@pytest.mark.slow
def test_init_builds_snnet_from_anchor_files_and_a_train_folder(deit, timm_anchors, tmp_path):
    from snnet.api import load_net

    for model, spec in zip(timm_anchors, deit.anchors):
        save_file(model.state_dict(), str(tmp_path / f"{spec.arch}.safetensors"))
    for i, wnid in enumerate(["n01440764", "n01443537", "n01484850"]):
        (tmp_path / "data" / "train" / wnid).mkdir(parents=True)
        Image.effect_noise((260, 240), 40 + 20 * i).convert("RGB").save(tmp_path / "data" / "train" / wnid / "a.JPEG")
    result = snnet("init", "--family", "deit", "--weights", str(tmp_path), "--data", str(tmp_path / "data"),
                   "--out", str(tmp_path / "snnet.safetensors"), "--samples", "3", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert "68 stitches initialised by least squares" in result.stdout
    net = load_net("deit", tmp_path / "snnet.safetensors")
    for anchor, reference in zip(net.anchors, timm_anchors):
        assert all(torch.equal(anchor.state_dict()[k], v) for k, v in reference.state_dict().items())
    # the fitted layer maps the front's activations onto the back's better than a fresh layer would

    x = torch.stack([image for image, _ in deit.task.folder(deit, tmp_path / "data" / "train")])
    config = net.space[24]
    with torch.no_grad():
        front = net.block_tokens(config.front, x)[config.front_block + 1]
        target = net.block_tokens(config.back, x)[config.back_block]
        fitted = (net.stitch_layers[config.layer](front) - target).norm()
        fresh = (torch.nn.Linear(192, 384)(front) - target).norm()
    assert fitted < 0.5 * fresh


def test_stage_wise_families_say_how_to_get_weights_and_refuse_an_official_import(tmp_path):
    from snnet.api import load_net
    from snnet.checkpoints import convert_official
    from snnet.errors import SnnetError

    with pytest.raises(SnnetError) as missing:
        load_net("swin")
    assert "python -m snnet init --family swin --data DIR" in str(missing.value)
    assert "convert-official" not in str(missing.value)
    with pytest.raises(SnnetError, match="stage-wise layout is not supported"):
        convert_official(tmp_path / "snnet_swin.pth", tmp_path / "out.safetensors", "swin")


def test_init_builds_an_embedded_family_offline_from_its_shipped_anchors(tmp_path):
    from snnet.api import load_net, shipped_dir
    from snnet.weights import load_weights

    out = tmp_path / "mini_init.safetensors"
    result = snnet("init", "--family", "mini", "--out", str(out), "--samples", "64")
    assert result.returncode == 0, result.stderr
    assert "68 stitches initialised by least squares" in result.stdout
    net = load_net("mini", out)
    family = net.family
    images, _ = family.task.eval_set(family, "test")
    with torch.no_grad():
        for index, spec in enumerate(family.anchors):
            alone = load_weights(family.build_model(spec), shipped_dir("mini") / "zoo" / f"{spec.name}.safetensors")
            assert torch.equal(net(images[:16], stitch=index), alone(images[:16]))
