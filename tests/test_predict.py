import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from snnet.model import StitchableNet
from snnet.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]


def snnet(*args):
    return subprocess.run([sys.executable, "-m", "snnet", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    net = StitchableNet.from_family("mini")
    save_weights(net, folder / "net.safetensors")
    Image.new("RGB", (50, 30), "white").save(folder / "white.jpg")
    digit = Image.new("L", (32, 32), 0)
    digit.paste(255, (12, 6, 18, 26))
    digit.save(folder / "one.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    (folder / "wrong.safetensors").write_bytes(b"\x00" * 64)
    return folder


def test_predict_json_through_a_chosen_stitch(files):
    result = snnet("predict", "--family", "mini", "--weights", str(files / "net.safetensors"), "--stitch", "24",
                   str(files / "one.png"), str(files / "white.jpg"), "--json")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert [Path(i["image"]).name for i in items] == ["one.png", "white.jpg"]
    for item in items:
        assert item["stitch"] == 24 and item["latency_ms"] > 0
        assert [set(p) for p in item["top5"]] == [{"class_index", "label", "prob"}] * 5
        probs = [p["prob"] for p in item["top5"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(p["label"] == str(p["class_index"]) for p in item["top5"])


def test_predict_matches_the_network_on_the_preprocessed_image(files, mini):
    from snnet.api import load_net, predict
    from snnet.data import load_image

    net = load_net("mini", files / "net.safetensors")
    item = predict(net, 40, [files / "one.png"])[0]
    with torch.no_grad():
        probs = net(mini.task.preprocess(mini, load_image(files / "one.png"))[None], stitch=40).softmax(1)[0]
    assert item["top5"][0]["class_index"] == int(probs.argmax())
    assert item["top5"][0]["prob"] == pytest.approx(float(probs.max()), rel=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stitch", "24", "{d}/broken.png"], "error: {d}/broken.png: not a readable image"),
        (["--stitch", "24", "{d}/nothing.png"], "error: {d}/nothing.png: no such file"),
        (["--stitch", "71", "{d}/one.png"], "error: stitch id 71 is out of range: this space has ids 0-70"),
    ],
)
def test_predict_errors_are_one_line(files, args, message):
    result = snnet("predict", "--family", "mini", "--weights", str(files / "net.safetensors"),
                   *[a.format(d=files) for a in args])
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message.format(d=files))
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_weights_files_are_one_line(files, tmp_path):
    for path, message in [(files / "wrong.safetensors", "is not a readable safetensors file"),
                          (tmp_path / "absent.safetensors", "not found")]:
        result = snnet("predict", "--family", "mini", "--weights", str(path), "--stitch", "0", str(files / "one.png"))
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    deit_net = tmp_path / "other.safetensors"
    save_weights(torch.nn.Linear(3, 3), deit_net)
    result = snnet("predict", "--family", "mini", "--weights", str(deit_net), "--stitch", "0", str(files / "one.png"))
    assert result.returncode == 2 and "does not fit this model" in result.stderr
