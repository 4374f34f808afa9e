"""A configuration exported on its own: its parameters are snnet.cost's, its logits the StitchableNet's.

The oracles are the StitchableNet's own forward for that stitch and snnet.cost's parameter counts,
never what the export says of itself.
"""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snnet.api import load_net
from snnet.cli import main
from snnet.cost import anchor_costs, config_cost, space_costs
from snnet.errors import SnnetError
from snnet.export import FORMATS, export, export_bytes, load_path_net, path_net
from snnet.model import StitchableNet
from snnet.space import Segment

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mini_net():
    return load_net("mini")


@pytest.fixture(scope="module")
def resnet_net():
    return load_net("mini-resnet")


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _reference(net: StitchableNet, x: torch.Tensor, stitch_id: int) -> torch.Tensor:
    with torch.no_grad():
        return net(x, stitch=stitch_id)


def _check_every_configuration(net: StitchableNet, logits_for: list[int]) -> None:
    costs = space_costs(net.family, net.space, net.final_norm)
    x = torch.randn(3, *net.family.input_size)
    for config, cost in zip(net.space, costs):
        single = path_net(net, config.id)
        assert _params(single) == cost.params and _params(single) / 1e6 == pytest.approx(cost.params_m), config
        if config.id in logits_for:
            with torch.no_grad():
                assert torch.equal(single(x), _reference(net, x, config.id)), config


@pytest.mark.parametrize("official_compat", [False, True])
def test_mini_configurations_have_their_cost_parameters_and_logits(official_compat):
    net = load_net("mini", official_compat=official_compat)
    _check_every_configuration(net, logits_for=[0, 2, 3, 24, 56, 70])


def test_mini_resnet_configurations_have_their_cost_parameters_and_logits(resnet_net):
    _check_every_configuration(resnet_net, logits_for=[0, 1, 2, 3, 10, 22])


def test_a_stage_wise_cnn_into_vit_family_from_random_weights():
    # ResNet-18 into Swin-Ti: two adapters, a 1x1 convolution laid out as Swin's tokens
    net = StitchableNet.from_family("resnet-swin").eval()
    _check_every_configuration(net, logits_for=[1, 3])


def test_a_path_of_two_stitch_points(mini_net):
    # tiny blocks 0-3, small 4-7, base 8-11: through the layers of windows 3 and 7 of the two pairs
    net = load_net("mini")
    net.space = net.space.with_paths([((Segment(0, 0, 3), Segment(1, 4, 7), Segment(2, 8, 11)), (3, 18))])
    config = net.space[len(net.space) - 1]
    single = path_net(net, config.id)
    assert _params(single) == config_cost(anchor_costs(net.family), config).params
    x = torch.randn(2, *net.family.input_size)
    with torch.no_grad():
        assert torch.equal(single(x), _reference(net, x, config.id))
    assert {name.split(".")[0] + "." + name.split(".")[1] for name in single.state_dict()} == {
        "anchors.0", "anchors.1", "anchors.2", "stitch_layers.3", "stitch_layers.18"}


def test_the_export_holds_the_sn_net_tensors_it_runs_name_for_name(mini_net):
    exported = path_net(mini_net, 24).state_dict()
    whole = mini_net.state_dict()
    config = mini_net.space[24]
    assert all(torch.equal(tensor, whole[name]) for name, tensor in exported.items())
    assert f"stitch_layers.{config.layer}.weight" in exported
    assert not any(name.startswith("anchors.2.") for name in exported)
    assert not any(name.startswith(f"anchors.0.blocks.{config.front_block + 1}.") for name in exported)


def _onnx_session(data: bytes):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family_name, stitch_id", [("mini", 2), ("mini", 24), ("mini-resnet", 10)])
def test_onnx_gives_the_stitchable_nets_logits(family_name, stitch_id, mini_net, resnet_net):
    net = mini_net if family_name == "mini" else resnet_net
    session = _onnx_session(export_bytes(net, stitch_id, "onnx"))
    assert [i.name for i in session.get_inputs()] == ["image"] and [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 5):  # the export traced a batch of 2: the batch size is free
        x = torch.randn(batch, *net.family.input_size)
        logits = session.run(["logits"], {"image": x.numpy()})[0]
        assert logits.shape == (batch, net.family.num_classes)
        assert float((torch.from_numpy(logits) - _reference(net, x, stitch_id)).abs().max()) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("stitch_id", [0, 24])
def test_onnx_top1_on_the_test_split_is_the_stitchable_nets(mini_net, stitch_id):
    images, labels = mini_net.family.task.eval_set(mini_net.family, "test")
    session = _onnx_session(export_bytes(mini_net, stitch_id, "onnx"))
    ours, theirs = [], []
    for batch in images.split(600):
        ours.append(_reference(mini_net, batch, stitch_id))
        theirs.append(torch.from_numpy(session.run(["logits"], {"image": batch.numpy()})[0]))
    ours, theirs = torch.cat(ours), torch.cat(theirs)
    assert len(labels) == 3600
    assert float((ours - theirs).abs().max()) <= 1e-4
    assert int((theirs.argmax(1) == labels).sum()) == int((ours.argmax(1) == labels).sum())


def test_torchscript_loads_with_torch_jit_and_gives_the_same_logits(mini_net, resnet_net):
    for net, stitch_id in [(mini_net, 56), (resnet_net, 3)]:
        loaded = torch.jit.load(io.BytesIO(export_bytes(net, stitch_id, "torchscript")))
        x = torch.randn(3, *net.family.input_size)
        with torch.no_grad():
            assert torch.allclose(loaded(x), _reference(net, x, stitch_id), atol=1e-5, rtol=0)


def test_safetensors_rebuilds_with_its_metadata(mini_net, resnet_net, tmp_path):
    from safetensors import safe_open

    for net, stitch_id in [(mini_net, 40), (resnet_net, 22), (mini_net, 1)]:
        path = export(net, stitch_id, "safetensors", tmp_path / f"{net.family.name}_{stitch_id}.safetensors")
        rebuilt = load_path_net(path)
        x = torch.randn(3, *net.family.input_size)
        with torch.no_grad():
            assert torch.equal(rebuilt(x), _reference(net, x, stitch_id))
        assert _params(rebuilt) == space_costs(net.family, net.space)[stitch_id].params
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata()
        assert metadata["family"] == net.family.name and int(metadata["stitch_id"]) == stitch_id
        assert json.loads(metadata["input_size"]) == [1, 32, 32]
        assert json.loads(metadata["class_names"]) == [str(i) for i in range(10)]


def test_bad_requests_are_one_line(mini_net, tmp_path):
    with pytest.raises(SnnetError, match=r"^stitch id 71 is out of range: this space has ids 0-70$"):
        export_bytes(mini_net, 71, "onnx")
    with pytest.raises(SnnetError, match=r"^unknown export format 'tflite': choose from onnx, torchscript, "
                                         r"safetensors$"):
        export_bytes(mini_net, 24, "tflite")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SnnetError, match=r"^cannot write .*a_file/net\.onnx: "):
        export(mini_net, 24, "onnx", blocker / "net.onnx")
    with pytest.raises(SnnetError, match="not a configuration exported by snnet"):
        load_path_net(ROOT / "checkpoints" / "mini" / "snnet.safetensors")
    assert set(FORMATS) == {"onnx", "torchscript", "safetensors"}


def test_cli_writes_the_file(tmp_path):
    out = tmp_path / "stitch24.onnx"
    result = subprocess.run([sys.executable, "-m", "snnet", "export", "--family", "mini", "--stitch", "24",
                             "--format", "onnx", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out} (onnx, ") and result.stderr == ""
    session = _onnx_session(out.read_bytes())
    x = torch.randn(2, 1, 32, 32)
    reference = _reference(load_net("mini"), x, 24)
    assert float((torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0]) - reference).abs().max()) <= 1e-4


@pytest.mark.parametrize("args, message", [
    (["--stitch", "71", "--format", "onnx"], "error: stitch id 71 is out of range: this space has ids 0-70"),
    (["--stitch", "24", "--format", "tflite"],
     "error: unknown export format 'tflite': choose from onnx, torchscript, safetensors"),
    (["--stitch", "24", "--format", "onnx", "--weights", "missing.safetensors"],
     "error: weights file missing.safetensors not found"),
])
def test_cli_rejects_an_impossible_stitch_a_bad_format_or_missing_weights_in_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["export", "--family", "mini", "--out", str(out), *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message and captured.out == ""
    assert not out.exists()


CURVE_DOWNLOADS = ("Download PNG", "Download SVG", "Download CSV")  # the curve's, not the configuration's


def test_the_explorers_buttons_make_the_selected_configurations_files(tmp_path, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.testing.v1 import AppTest

    made = {}  # file name -> the callable a click runs (AppTest has no client to click it)
    register = MediaFileManager.add_deferred

    def keep(self, callable_, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = callable_
        return register(self, callable_, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    app = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    app.query_params["family"], app.query_params["stitch"] = "mini", "24"
    app.run()
    assert not app.exception and not app.error
    assert [b.proto.label for b in app.get("download_button") if b.proto.label not in CURVE_DOWNLOADS] == [
        "Download ONNX", "Download TorchScript", "Download safetensors"]
    assert {name for name in made if not name.startswith("mini-curve.")} == {
        "mini_stitch24.onnx", "mini_stitch24.pt", "mini_stitch24.safetensors"}
    session = _onnx_session(made["mini_stitch24.onnx"]())
    x = torch.randn(4, 1, 32, 32)
    reference = _reference(load_net("mini"), x, 24)
    assert float((torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0]) - reference).abs().max()) <= 1e-4
