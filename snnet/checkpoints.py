"""Weights from outside: timm anchor weights (hub or files) and the released SN-Net checkpoints.

Nothing here executes code from a file: .safetensors files are plain tensors, and .pth files are
read with torch.load(weights_only=True), which only rebuilds tensors and plain containers.

Anchor weights are looked for, in order, at an explicit path (a file, or a folder of per-anchor
files), under checkpoints/<family>/, then on the Hugging Face hub (its local cache when offline).
"""
import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from snnet.errors import SnnetError
from snnet.weights import check_fit, read_weights

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_HOST = "huggingface.co"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or .pth file, unwrapped from a training checkpoint if need be."""
    path = Path(path)
    if not path.is_file():
        raise SnnetError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        # Training checkpoints of the reference code also pickle their argparse options; a Namespace
        # is plain data, so it is the one class allowed besides what weights_only accepts.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and unpickler errors all mean: not loadable safely
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SnnetError(f"{path} is not a weights-only torch checkpoint ({first[:160]})") from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, dict) or not all(isinstance(t, torch.Tensor) for t in checkpoint.values()):
        raise SnnetError(f"{path} holds no state dict of tensors")
    # Weights saved from a DistributedDataParallel wrapper carry a "module." prefix.
    return {name.removeprefix("module."): tensor for name, tensor in checkpoint.items()}


def hub_online(timeout_s: float = 3.0) -> bool:
    """Whether the model hub can be reached; HF_HUB_OFFLINE=1 says no without asking the network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    reachable = []

    def probe():
        try:
            socket.create_connection((HUB_HOST, 443), timeout=timeout_s).close()
            reachable.append(True)
        except OSError:
            pass

    # Name resolution has no timeout of its own, so the probe runs in a thread we stop waiting for.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(reachable)


def hub_id(arch: str) -> Optional[str]:
    from snnet._timm import timm

    config = timm.models.get_pretrained_cfg(arch)
    return getattr(config, "hf_hub_id", None) if config is not None else None


def hub_file(arch: str, online: bool) -> Optional[Path]:
    """The anchor's timm weights from the hub, or from its local cache when offline; None if neither has them."""
    repo = hub_id(arch)
    if repo is None:
        return None
    from huggingface_hub import hf_hub_download

    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=not online))
        except Exception:  # not cached, not on the hub, or no network: try the next file, then give up
            continue
    return None


def local_candidates(family, index: int, weights: Optional[Path] = None) -> list[Path]:
    """Where an anchor's weights file may lie, most specific first."""
    spec = family.anchors[index]
    if weights is not None and Path(weights).is_file():
        return [Path(weights)]
    # an embedded family's anchors trained alone ship in its zoo/ folder
    folders = ([Path(weights)] if weights is not None else []) + [CHECKPOINTS / family.name,
                                                                   CHECKPOINTS / family.name / "zoo"]
    found = []
    for folder in folders:
        for stem in (spec.arch, spec.name):
            found += [folder / f"{stem}{suffix}" for suffix in WEIGHT_SUFFIXES]
        # the names the original releases download under, e.g. deit_tiny_patch16_224-a1311bcf.pth
        found += sorted(folder.glob(f"{spec.arch}-*.pth")) if folder.is_dir() else []
    return found


def anchor_weights_file(family, index: int, weights: Optional[Path] = None, online: Optional[bool] = None) -> Path:
    spec = family.anchors[index]
    for path in local_candidates(family, index, weights):
        if path.is_file():
            return path
    online = hub_online() if online is None else online
    path = hub_file(spec.arch, online)
    if path is not None:
        return path
    where = Path(weights) if weights is not None else CHECKPOINTS / family.name
    repo = hub_id(spec.arch)
    source = f"https://huggingface.co/{repo}/resolve/main/model.safetensors" if repo else f"timm's {spec.arch} weights"
    raise SnnetError(f"no weights for anchor {spec.name}: {where / (spec.arch + '.safetensors')} (or .pth) is missing "
                     f"and the hub is {'without them' if online else 'unreachable'}; download {source} to that path "
                     f"or give --weights DIR holding it")


def load_anchor(family, index: int, weights: Optional[Path] = None, online: Optional[bool] = None) -> nn.Module:
    """One anchor with its timm pretrained weights (see the module docstring for where they come from)."""
    path = anchor_weights_file(family, index, weights, online)
    state = read_state_dict(path)
    model = family.build_anchor(index)  # on the CPU: some architectures compute buffers at build time
    # timm's filter adapts older layouts (e.g. the original DeiT release) to its own; it is a no-op
    # on weights already in timm's layout.
    adapt = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if adapt is not None:
        state = adapt(state, model)
    expected = model.state_dict()
    check_fit(state, expected, f"{path} does not fit {family.anchors[index].arch}")
    model.load_state_dict({n: t.to(expected[n].dtype) for n, t in state.items()})
    return model.eval()


def load_anchors(family, weights: Optional[Path] = None) -> list[nn.Module]:
    online = None if all(any(p.is_file() for p in local_candidates(family, i, weights))
                         for i in range(len(family.anchors))) else hub_online()
    return [load_anchor(family, i, weights, online) for i in range(len(family.anchors))]


def official_layer_map(space) -> dict[tuple[int, int], int]:
    """(pair, window) of the reference code's stitch_layers.{pair}.{window} -> our stitching layer.

    The reference keeps one list of stitching layers per neighbouring pair of anchors, in the
    order of its pairs, each list in window order; our layers run pair by pair in the same order.
    """
    pairs, mapping = [], {}
    for layer, pair in enumerate(space.layer_pairs):
        if pair not in pairs:
            pairs.append(pair)
        window = sum(1 for p in space.layer_pairs[:layer] if p == pair)
        mapping[(pairs.index(pair), window)] = layer
    return mapping


def convert_official(source: Path, out: Path, family_name: str = "deit") -> dict:
    """Import a released SN-Net checkpoint (anchors.{i}.*, stitch_layers.{pair}.{window}.transform.*)."""
    from safetensors.torch import save_file

    from snnet.families import get_family
    from snnet.model import StitchableNet

    if get_family(family_name).stitch_stages is not None:
        raise SnnetError(f"convert-official imports the released plain-ViT (DeiT) checkpoints; family {family_name}'s "
                         "stage-wise layout is not supported: build its weights with python -m snnet init")
    started = time.perf_counter()
    state = read_state_dict(source)
    net = StitchableNet.from_family(family_name, device="meta")
    layers = official_layer_map(net.space)
    converted = {}
    for name, tensor in state.items():
        parts = name.split(".")
        if parts[0] == "stitch_layers" and len(parts) == 5 and parts[3] == "transform":
            key = (int(parts[1]), int(parts[2]))
            if key not in layers:
                raise SnnetError(f"{source}: {name} has no stitching layer in family {family_name}'s "
                                 f"reference space ({net.space.num_layers} layers)")
            name = f"stitch_layers.{layers[key]}.{parts[4]}"
        converted[name] = tensor
    check_fit(converted, net.state_dict(), f"{source} is not an SN-Net checkpoint of family {family_name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".tmp")
    save_file({n: t.contiguous() for n, t in converted.items()}, str(temporary))
    temporary.replace(out)
    return {"tensors": len(converted), "stitching_layers": net.space.num_layers, "seconds": time.perf_counter() - started}


def init_from_anchors(family_name: str, data, out: Path, weights: Optional[Path] = None, samples: int = 256,
                      batch_size: int = 32) -> dict[int, float]:
    """A StitchableNet from the anchors' timm weights, its stitching layers fitted by least squares on
    `samples` training images (as the paper initialises them); written to `out`."""
    from snnet.families import get_family
    from snnet.model import StitchableNet
    from snnet.stitching import least_squares_init
    from snnet.weights import save_weights

    family = get_family(family_name)
    net = StitchableNet(family, load_anchors(family, weights), family.space())
    residuals = least_squares_init(net, family.task.fit_images(family, samples, data, batch_size))
    save_weights(net, out)
    return residuals
