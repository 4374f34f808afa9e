"""The public face of the backend: what the CLI and the app call.

load the shipped or given weights -> results (from the store; what it lacks comes from the shipped
metrics file when the weights match, else is evaluated and stored) -> predictions.
"""
import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from snnet.cost import space_rows
from snnet.data import class_labels, eval_set, eval_set_key, load_image, preprocess
from snnet.errors import SnnetError
from snnet.evaluate import evaluate_space, latency_ms, space_latency
from snnet.families import get_family
from snnet.model import StitchableNet
from snnet.store import Store, settings_key
from snnet.weights import load_weights, weights_hash

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_dir(family_name: str) -> Path:
    return CHECKPOINTS / family_name


def load_net(family_name: str, weights: Optional[Path] = None, device: str = "cpu") -> StitchableNet:
    """A StitchableNet with the given weights, or the family's shipped ones."""
    family = get_family(family_name)
    path = Path(weights) if weights else shipped_dir(family_name) / "snnet.safetensors"
    if weights is None and not path.exists():
        raise SnnetError(f"no shipped weights for family {family_name} ({path} is missing): "
                         f"give --weights PATH{', or run python -m snnet build-default' if family_name == 'mini' else ''}")
    torch.manual_seed(0)
    net = StitchableNet.from_family(family)
    load_weights(net, path)
    return net.to(device).eval()


def eval_settings(net: StitchableNet, split: str) -> str:
    space = net.space
    return settings_key(kernel=space.kernel, stride=space.stride, direction=space.direction,
                        final_norm=net.final_norm, split=split, data=eval_set_key(net.family, split))


def _shipped_metrics(family_name: str) -> Optional[dict]:
    path = shipped_dir(family_name) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def metrics(net: StitchableNet, split: str = "test", store: Optional[Store] = None,
            compute_missing: bool = True, show_bar: bool = False) -> dict[int, dict]:
    """Per-configuration metrics of `net`, from the cache when known."""
    store = store or Store()
    family, weights = net.family.name, weights_hash(net)
    settings = eval_settings(net, split)
    known = store.get_metrics(family, weights, split, settings)
    if len(known) < len(net.space):
        shipped = _shipped_metrics(family)
        if shipped and shipped["weights"] == weights and shipped["settings"] == settings:
            store.put_metrics(family, weights, split, settings,
                              {row["id"]: row for row in shipped["configurations"]})
            store.put_zoo(family, split, shipped["zoo"])
            known = store.get_metrics(family, weights, split, settings)
    missing = [i for i in range(len(net.space)) if i not in known]
    if missing and compute_missing:
        images, labels = eval_set(net.family, split)
        device = next(net.parameters()).device
        measured = evaluate_space(net, images, labels, missing, show_bar=show_bar)
        for stitch_id, latency in space_latency(net, images[:1].to(device), missing).items():
            measured[stitch_id]["latency_ms"] = latency
        store.put_metrics(family, weights, split, settings, measured)
        known = {**known, **measured}
    return known


def results(net: StitchableNet, split: str = "test", store: Optional[Store] = None, show_bar: bool = False) -> list[dict]:
    """One row per configuration (cost and metrics), then one per zoo model (kind "zoo")."""
    store = store or Store()
    measured = metrics(net, split, store, show_bar=show_bar)
    rows = [{**row, **measured[row["id"]]} for row in space_rows(net.family, net.space, net.final_norm)]
    zoo = [{"kind": "zoo", **row} for row in store.get_zoo(net.family.name, split)]
    return rows + zoo


def predict(net: StitchableNet, stitch: int, images: Sequence, top: int = 5) -> list[dict]:
    """Top classes of each image (a path or a PIL image) through one configuration."""
    net.space[stitch]  # a bad id fails before any image is read
    family = net.family
    labels = class_labels(family)
    device = next(net.parameters()).device
    out = []
    for image in images:
        name = str(image) if isinstance(image, (str, Path)) else getattr(image, "filename", "") or "image"
        pil = load_image(image) if isinstance(image, (str, Path)) else image
        x = preprocess(family, pil)[None].to(device)
        with torch.no_grad():
            probs = net(x, stitch=stitch).float().softmax(dim=1)[0]
            elapsed = latency_ms(lambda inp: net(inp, stitch=stitch), x, repeats=5, warmup=1)
        values, indices = probs.topk(min(top, len(probs)))
        out.append({"image": name, "stitch": stitch, "latency_ms": elapsed,
                    "top5": [{"class_index": int(i), "label": labels[int(i)], "prob": float(p)}
                             for p, i in zip(values, indices)]})
    return out
