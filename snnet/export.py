"""One configuration as a network of its own: only its path, written as ONNX, TorchScript or safetensors.

`path_net(net, stitch_id)` takes from a StitchableNet exactly what that configuration runs: the
front anchor's embedding, its segments of anchor blocks, its stitching layers and the back
anchor's head (with the final norm as the net runs it). The other anchors, their unused blocks and
the stitching layers it does not take are left out, so its parameters are the configuration's
`params_m` in snnet.cost. Its state-dict names are the StitchableNet's own (`anchors.1.blocks.7...`,
`stitch_layers.6.weight`): an export holds a subset of the SN-Net checkpoint, name for name.

Every format takes one input, `image` (N x C x H x W, preprocessed as the family's task does:
`family.task.preprocess`), and gives one output, `logits` (N x classes); the batch size is free.
Each file also carries what rebuilds and feeds it (family, stitch id, path, final norm, input size,
class names); `load_path_net` rebuilds a safetensors export.
"""
import copy
import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from snnet.errors import SnnetError
from snnet.families import Family, get_family
from snnet.model import StitchableNet
from snnet.space import Config, Segment
from snnet.stitching import make_stitching_layer

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}  # format -> file suffix
INPUT_NAME, OUTPUT_NAME = "image", "logits"
METADATA_FILE = "snnet.json"  # in a TorchScript archive; ONNX keeps the metadata as model properties
ONNX_OPSET = 17


class PathNet(nn.Module):
    """A single configuration: embed -> segments joined by stitching layers -> head, nothing else.

    It shares tensors with the modules it is made from (no copy: an ImageNet anchor is hundreds of
    MB); `anchors` holds each anchor it passes through, pruned to the parts the path runs.
    """

    def __init__(self, family: Family, config: Config, anchors: dict[int, nn.Module],
                 stitch_layers: dict[int, nn.Module], final_norm: bool):
        super().__init__()
        self.family = family
        self.config = config
        self.final_norm = final_norm or config.kind == "anchor"  # as StitchableNet.run decides
        self.adapters = {index: family.adapter_for(index) for index in anchors}
        self.anchors = nn.ModuleDict({str(index): _prune(model, self.adapters[index], config, index)
                                      for index, model in anchors.items()})
        self.stitch_layers = nn.ModuleDict({str(layer): stitch_layers[layer] for layer in config.layers})
        # Plain lists: the blocks are registered (and saved) inside the pruned anchors.
        self.segments = [[self.adapters[s.anchor].blocks(anchors[s.anchor])[b]
                          for b in range(s.first_block, s.last_block + 1)] for s in config.segments]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        front, back = self.config.front, self.config.back
        h = self.adapters[front].embed(self.anchors[str(front)], x)
        for i, blocks in enumerate(self.segments):
            if i > 0:
                h = self.stitch_layers[str(self.config.layers[i - 1])](h)
            for block in blocks:
                h = block(h)
        return self.adapters[back].head(self.anchors[str(back)], h, final_norm=self.final_norm)


def _registered_parts(model: nn.Module, block: nn.Module) -> list[nn.Module]:
    # A staged adapter may hand out a stage's first block as a view, Sequential(downsample, block),
    # that the model does not register: its parts are what the model holds.
    return [block] if any(m is block for m in model.modules()) else list(block.children())


def _prune(model: nn.Module, adapter, config: Config, index: int) -> nn.Module:
    """A shallow copy of an anchor holding only what `config` runs of it: its embedding if the path
    starts here, its blocks on the path, its head if the path ends here. Left-out parts become
    nn.Identity and left-out tensors of the model itself None; parts without tensors stay (they
    cost nothing, and a head may call one, e.g. a dropout)."""
    used = {b for s in config.segments if s.anchor == index for b in range(s.first_block, s.last_block + 1)}
    blocks = adapter.blocks(model)
    keep, leave = set(), set()
    for b, block in enumerate(blocks):
        (keep if b in used else leave).update(id(part) for part in _registered_parts(model, block))
    (keep if config.back == index else leave).update(id(m) for m in adapter.head_modules(model))
    keep_embed = config.front == index
    structured = keep | leave

    def holds(module: nn.Module, ids: set) -> bool:
        return any(id(m) in ids for m in module.modules())

    def pruned(module: nn.Module) -> nn.Module:
        if id(module) in keep:
            return module
        if not holds(module, structured):
            has_tensors = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
            return module if keep_embed or not has_tensors else nn.Identity()
        if id(module) in leave:
            return nn.Identity()
        part = copy.copy(module)
        part._modules = {name: None if child is None else pruned(child) for name, child in module._modules.items()}
        part._parameters = {name: p if keep_embed else None for name, p in module._parameters.items()}
        part._buffers = {name: b if keep_embed else None for name, b in module._buffers.items()}
        return part

    return pruned(model)


def path_net(net: StitchableNet, stitch_id: int) -> PathNet:
    """The configuration `stitch_id` of `net` as a network of its own. It shares net's modules, so
    putting it in eval mode (as exporting needs: BatchNorm, dropout) puts those in eval mode too."""
    config = net.space[stitch_id]
    anchors = {s.anchor: net.anchors[s.anchor] for s in config.segments}
    layers = {layer: net.stitch_layers[layer] for layer in config.layers}
    return PathNet(net.family, config, anchors, layers, net.final_norm).eval()


def _metadata(net: PathNet, source: StitchableNet) -> dict[str, str]:
    """What rebuilds the network (family, path, final norm) and what a reader needs to feed it;
    every format carries it (ONNX model properties, a TorchScript extra file, safetensors metadata)."""
    family, config = net.family, net.config
    return {
        "format": "snnet.path/1",
        "family": family.name,
        "stitch_id": str(config.id),
        "space": json.dumps({"kernel": source.space.kernel, "stride": source.space.stride,
                             "direction": source.space.direction}),
        "segments": json.dumps([[s.anchor, s.first_block, s.last_block] for s in config.segments]),
        "layers": json.dumps(list(config.layers)),
        "final_norm": json.dumps(net.final_norm),
        "input_name": INPUT_NAME,
        "input_size": json.dumps(list(family.input_size)),
        "output_name": OUTPUT_NAME,
        "class_names": json.dumps(family.task.class_labels(family)),
    }


def _onnx_bytes(net: PathNet, metadata: dict[str, str]) -> bytes:
    import onnx

    # The TorchScript-based exporter (dynamo=False): the dynamo exporter needs the onnxscript
    # package besides onnx, while this one needs nothing more than torch and traces these plain
    # modules fine, dynamic batch included.
    buffer = io.BytesIO()
    torch.onnx.export(net, (_sample(net),), buffer, dynamo=False, opset_version=ONNX_OPSET,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    model = onnx.load_model_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, metadata)
    return model.SerializeToString()


def _torchscript_bytes(net: PathNet, metadata: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    # No check_trace (a second and third run, 3x the time): the tests compare the saved file's
    # logits with the StitchableNet's.
    traced = torch.jit.trace(net, _sample(net), check_trace=False)
    torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


def _sample(net: PathNet) -> torch.Tensor:
    # a batch of two: with one, a batch-sized dimension could be traced as a constant
    return torch.zeros(2, *net.family.input_size)


def _safetensors_bytes(net: PathNet, metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    tensors = {name: t.detach().to("cpu").contiguous() for name, t in net.state_dict().items()}
    return save(tensors, metadata=metadata)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise SnnetError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")


def export_bytes(net: StitchableNet, stitch_id: int, fmt: str) -> bytes:
    """The file of configuration `stitch_id` in format `fmt` (onnx, torchscript or safetensors)."""
    check_format(fmt)
    single = path_net(net, stitch_id)
    write = {"onnx": _onnx_bytes, "torchscript": _torchscript_bytes, "safetensors": _safetensors_bytes}[fmt]
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing turns timm's input-size checks into constants: the family's input size is fixed,
        # and the batch size stays free (the tests run other batch sizes).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return write(single, _metadata(single, net))


def export(net: StitchableNet, stitch_id: int, fmt: str, out: Path) -> Path:
    """Write configuration `stitch_id` to `out` (whole or not at all)."""
    out = Path(out)
    data = export_bytes(net, stitch_id, fmt)
    temporary = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, out)
    except OSError as error:
        if temporary.parent.is_dir():
            temporary.unlink(missing_ok=True)
        raise SnnetError(f"cannot write {out}: {error.strerror or error}") from None
    return out


def file_name(family_name: str, stitch_id: int, fmt: str) -> str:
    """The name a download gets, e.g. mini_stitch24.onnx."""
    return f"{family_name}_stitch{stitch_id}{FORMATS[fmt]}"


def load_path_net(path: Path) -> PathNet:
    """Rebuild an exported safetensors file: only the anchors its path passes through are built."""
    from safetensors import SafetensorError, safe_open

    from snnet.weights import check_fit

    path = Path(path)
    if not path.is_file():
        raise SnnetError(f"exported file {path} not found")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise SnnetError(f"{path} is not a readable safetensors file ({str(error).splitlines()[0]})") from None
    if metadata.get("format") != "snnet.path/1":
        raise SnnetError(f"{path} is not a configuration exported by snnet (no snnet.path/1 metadata)")
    family = get_family(metadata["family"])
    segments = tuple(Segment(*s) for s in json.loads(metadata["segments"]))
    config = Config(int(metadata["stitch_id"]), segments, tuple(json.loads(metadata["layers"])))
    anchors = {s.anchor: family.build_anchor(s.anchor) for s in segments}
    points = {index: family.adapter_for(index).points(model, family.input_size) for index, model in anchors.items()}
    layers = {layer: make_stitching_layer(points[left.anchor][left.last_block + 1],
                                          points[right.anchor][right.first_block])
              for left, layer, right in config.stitch_points}
    net = PathNet(family, config, anchors, layers, json.loads(metadata["final_norm"]))
    check_fit(tensors, net.state_dict(), f"{path} does not fit the configuration it names")
    net.load_state_dict(tensors)
    return net.eval()

