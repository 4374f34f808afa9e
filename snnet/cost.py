"""Exact MACs and parameters of every configuration, summed from per-piece costs.

Each anchor is traced once, piece by piece (embed, each block, head), with fvcore on a single
sample; a configuration's cost is then the sum of its segments' pieces plus its stitching layers. MACs are counted
as fvcore counts them (one multiply-add = 1) with attention matmuls included: fvcore does not see
PyTorch's fused scaled_dot_product_attention, so tracing switches timm's attention modules to
their explicit matmul path, which computes the same function. Tracing builds every anchor, so the
per-piece costs are kept in the store, keyed by the anchors' architectures: traced once per machine.
"""
import contextlib
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from snnet.families import Activation, Family
from snnet.space import Config, StitchSpace
from snnet.stitching import maps_prefix


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6


@dataclass(frozen=True)
class AnchorCost:
    embed: Cost
    blocks: tuple[Cost, ...]
    head: Cost
    head_without_norm: Cost
    points: tuple[Optional[Activation], ...]  # what enters each block, then the last block's output

    @property
    def total(self) -> Cost:
        return sum_costs([self.embed, *self.blocks, self.head])


def sum_costs(costs) -> Cost:
    costs = list(costs)
    return Cost(sum(c.macs for c in costs), sum(c.params for c in costs))


@contextlib.contextmanager
def unfused_attention(module: nn.Module):
    fused = [m for m in module.modules() if getattr(m, "fused_attn", False)]
    for m in fused:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in fused:
            m.fused_attn = True


class _Piece(nn.Module):
    """Makes a part of a model's forward traceable as a module of its own."""

    def __init__(self, fn: Callable, *modules: nn.Module):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def trace_macs(module: nn.Module, x: torch.Tensor) -> int:
    """MACs of module(x) by a full fvcore trace, attention matmuls included."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with unfused_attention(module), torch.no_grad():
        analysis = FlopCountAnalysis(module, x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(analysis.total())


def _params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _block_key(block: nn.Module, x: torch.Tensor) -> tuple:
    # Blocks of one architecture on one input shape cost the same; plain attributes (e.g. Swin's
    # window shift) tell apart blocks whose printed modules look alike.
    settings = tuple(sorted((k, repr(v)) for k, v in vars(block).items() if not k.startswith("_") and k != "training"))
    return type(block), repr(block), tuple(x.shape), settings


@torch.no_grad()
def measure_anchors(family: Family, net=None) -> list[AnchorCost]:
    """Trace every anchor piece by piece (embed, each block on an activation of the shape the
    model's own run gives it, head); identical blocks on identical input shapes are traced once.
    `net`: the family's StitchableNet when one is built already."""
    from snnet.model import StitchableNet

    if net is None:  # built on the CPU: some architectures (Swin, LeViT) compute index buffers at build time
        net = StitchableNet.from_family(family)
    net.eval()
    x = torch.zeros(1, *family.input_size)
    costs = []
    for anchor, (model, adapter, blocks) in enumerate(zip(net.anchors, net.adapters, net.blocks)):
        # MACs depend on shapes alone, so a block identical to one traced already (same module, same
        # input shape) is not run again: its traced output, of the shape it would give, goes on.
        h = adapter.embed(model, x)
        block_costs, traced = [], {}
        for block in blocks:
            key = _block_key(block, h)
            if key not in traced:
                traced[key] = (trace_macs(block, h), block(h))
            macs, h = traced[key]
            block_costs.append(Cost(macs, _params(block)))
        head_params = _params(*adapter.head_modules(model))
        embed = _Piece(lambda inp: adapter.embed(model, inp), model)
        costs.append(AnchorCost(
            embed=Cost(trace_macs(embed, x), _params(model) - sum(c.params for c in block_costs) - head_params),
            blocks=tuple(block_costs),
            head=Cost(trace_macs(_Piece(lambda t: adapter.head(model, t), model), h), head_params),
            head_without_norm=Cost(
                trace_macs(_Piece(lambda t: adapter.head(model, t, final_norm=False), model), h), head_params),
            points=tuple(net.points[anchor]),
        ))
    return costs


def model_cost(model: nn.Module, input_size: tuple[int, ...]) -> Cost:
    """MACs and parameters of a whole model (a zoo model, say) by one fvcore trace."""
    return Cost(trace_macs(model, torch.zeros(1, *input_size)), _params(model))


_ANCHOR_COSTS: dict[str, list[AnchorCost]] = {}
COST_VERSION = 1  # bump when what a piece's cost counts changes: older stored costs are then measured again


def architecture_key(family: Family) -> str:
    """What a family's anchor costs depend on: its anchors' architectures, input and classes, and
    the versions of the code that builds and counts them."""
    from snnet._timm import timm

    anchors = [(spec.arch, spec.arch_args, type(family.adapter_for(i)).__name__)
               for i, spec in enumerate(family.anchors)]
    described = json.dumps({"anchors": anchors, "input_size": family.input_size, "classes": family.num_classes,
                            "timm": timm.__version__, "fvcore": _fvcore_version(), "cost": COST_VERSION},
                           sort_keys=True, default=repr)
    return hashlib.sha256(described.encode()).hexdigest()[:24]


def _fvcore_version() -> str:
    from importlib.metadata import version

    return version("fvcore")


def _cost_from_json(kept: dict) -> AnchorCost:
    return AnchorCost(
        embed=Cost(**kept["embed"]), blocks=tuple(Cost(**c) for c in kept["blocks"]), head=Cost(**kept["head"]),
        head_without_norm=Cost(**kept["head_without_norm"]),
        points=tuple(None if p is None else Activation(**{**p, "spatial": tuple(p["spatial"])}) for p in kept["points"]))


def anchor_costs(family: Family, store=None) -> list[AnchorCost]:
    """Per-piece costs of a family's anchors: traced once per architecture and kept in the store
    (tracing builds every anchor, seconds for ImageNet-sized ones), then once per process."""
    if family.name not in _ANCHOR_COSTS:
        from snnet.store import Store

        store = store or Store()
        key = architecture_key(family)
        kept = store.get_costs(key)
        if kept is None:
            measured = measure_anchors(family)
            store.put_costs(key, family.name, [asdict(cost) for cost in measured])
        else:
            measured = [_cost_from_json(cost) for cost in kept]
        _ANCHOR_COSTS[family.name] = measured
    return _ANCHOR_COSTS[family.name]


def layer_cost(front: Activation, back: Activation) -> Cost:
    """A stitching layer maps each position from front to back channels (fvcore counts Linear and
    1x1 convolution alike, without the bias); relaying the output out as tokens or a map is free,
    and so are prefix tokens it drops or makes (they are parameters, not products)."""
    rows = front.positions if maps_prefix(front, back) else front.spatial_positions
    made = 0 if maps_prefix(front, back) else back.prefix_tokens * back.channels
    return Cost(rows * front.channels * back.channels, (front.channels + 1) * back.channels + made)


def _path_pieces(anchors: list[AnchorCost], config: Config, final_norm: bool) -> list[tuple[tuple, tuple, Cost]]:
    """(trie node, module, cost) of each piece a configuration runs, in order. The trie node is the
    path up to and including the piece: StitchableNet.run computes a node once for all paths through
    it, while a module's parameters count once however many nodes use it."""
    if config.kind == "anchor":
        final_norm = True  # an anchor is its own model, final norm included
    pieces, node = [], ()

    def add(module: tuple, cost: Cost) -> None:
        nonlocal node
        node = node + (module,)
        pieces.append((node, module, cost))

    add(("embed", config.front), anchors[config.front].embed)
    for i, segment in enumerate(config.segments):
        if i > 0:
            left, layer, right = config.stitch_points[i - 1]
            add(("layer", layer), layer_cost(anchors[left.anchor].points[left.last_block + 1],
                                             anchors[right.anchor].points[right.first_block]))
        for block in range(segment.first_block, segment.last_block + 1):
            add(("block", segment.anchor, block), anchors[segment.anchor].blocks[block])
    back = anchors[config.back]
    head = back.head if final_norm else back.head_without_norm
    pieces.append((node + (("head", config.id),), ("head", config.back), head))
    return pieces


def config_cost(anchors: list[AnchorCost], config: Config, final_norm: bool = True) -> Cost:
    """Cost of one configuration; `final_norm=False` is the official SN-Net stitched path."""
    return sum_costs(cost for _, _, cost in _path_pieces(anchors, config, final_norm))


def ensemble_cost(anchors: list[AnchorCost], configs: Sequence[Config], final_norm: bool = True) -> Cost:
    """Cost of averaging several configurations' logits in one run: a path prefix they share runs
    once, a module they share holds its parameters once (one head per configuration, as run does)."""
    macs, params = {}, {}
    for config in configs:
        for node, module, cost in _path_pieces(anchors, config, final_norm):
            macs[node], params[module] = cost.macs, cost.params
    return Cost(sum(macs.values()), sum(params.values()))


def trace_config_macs(net, stitch_id: int | Sequence[int]) -> int:
    """MACs of one configuration of a StitchableNet, or of the ensemble of a sequence of them, by a
    full fvcore trace (a cross-check of the sums)."""
    x = torch.zeros(1, *net.family.input_size, device=next(net.parameters()).device)
    if isinstance(stitch_id, int):
        return trace_macs(_Piece(lambda inp: net(inp, stitch=stitch_id), net), x)
    return trace_macs(_Piece(lambda inp: net.forward_ensemble(inp, stitch_id), net), x)


def space_costs(family: Family, space: StitchSpace, final_norm: bool = True) -> list[Cost]:
    anchors = anchor_costs(family)
    return [config_cost(anchors, config, final_norm) for config in space]


def space_rows(family: Family, space: StitchSpace, final_norm: bool = True) -> list[dict]:
    """Every configuration as plain data with its cost: what the CLI prints and the app plots."""
    return [
        {**space.describe(config), "gmacs": cost.gmacs, "params_m": cost.params_m}
        for config, cost in zip(space, space_costs(family, space, final_norm))
    ]
