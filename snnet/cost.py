"""Exact MACs and parameters of every configuration, summed from per-piece costs.

Each anchor is traced once, piece by piece (embed, each block, head), with fvcore on a single
sample; a configuration's cost is then a sum of pieces plus its stitching layer. MACs are counted
as fvcore counts them (one multiply-add = 1) with attention matmuls included: fvcore does not see
PyTorch's fused scaled_dot_product_attention, so tracing switches timm's attention modules to
their explicit matmul path, which computes the same function.
"""
import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from snnet.families import Family
from snnet.space import Config, StitchSpace


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
    block_tokens: tuple[int, ...]  # tokens per sample leaving each block
    width: int

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


def measure_anchor(family: Family, index: int) -> AnchorCost:
    # Built on the meta device and given uninitialised memory: shapes are all a trace needs.
    model = family.build_anchor(index, device="meta").to_empty(device="cpu").eval()
    return measure_model(model, family.adapter, family.input_size)


def measure_model(model: nn.Module, adapter, input_size: tuple[int, ...]) -> AnchorCost:
    """Trace a model piece by piece; identical blocks (same architecture and input) are traced once."""
    x = torch.zeros(1, *input_size)
    embed = _Piece(lambda inp: adapter.embed(model, inp), model)
    with torch.no_grad():
        tokens = embed(x)
    block_costs, block_tokens, traced = [], [], {}
    for block in adapter.blocks(model):
        key = (repr(block), tuple(tokens.shape))
        if key not in traced:
            traced[key] = trace_macs(block, tokens)
        block_costs.append(Cost(traced[key], _params(block)))
        with torch.no_grad():
            tokens = block(tokens)
        block_tokens.append(tokens[0].numel() // tokens.shape[-1])
    head_params = _params(*adapter.head_modules(model))
    blocks_params = sum(c.params for c in block_costs)
    return AnchorCost(
        embed=Cost(trace_macs(embed, x), _params(model) - blocks_params - head_params),
        blocks=tuple(block_costs),
        head=Cost(trace_macs(_Piece(lambda t: adapter.head(model, t), model), tokens), head_params),
        head_without_norm=Cost(
            trace_macs(_Piece(lambda t: adapter.head(model, t, final_norm=False), model), tokens),
            head_params,
        ),
        block_tokens=tuple(block_tokens),
        width=adapter.width(model),
    )


_ANCHOR_COSTS: dict[tuple[str, int], AnchorCost] = {}


def anchor_costs(family: Family) -> list[AnchorCost]:
    """Per-piece costs of a family's anchors, measured once per process."""
    for index in range(len(family.anchors)):
        key = (family.name, index)
        if key not in _ANCHOR_COSTS:
            _ANCHOR_COSTS[key] = measure_anchor(family, index)
    return [_ANCHOR_COSTS[(family.name, i)] for i in range(len(family.anchors))]


def config_cost(anchors: list[AnchorCost], config: Config, final_norm: bool = True) -> Cost:
    """Cost of one configuration; `final_norm=False` is the official SN-Net stitched path."""
    front, back = anchors[config.front], anchors[config.back]
    if config.kind == "anchor":
        return front.total
    j, k = config.front_block, config.back_block
    layer = Cost(front.block_tokens[j] * front.width * back.width, (front.width + 1) * back.width)
    head = back.head if final_norm else back.head_without_norm
    return sum_costs([front.embed, *front.blocks[: j + 1], layer, *back.blocks[k:], head])


def trace_config_macs(net, stitch_id: int) -> int:
    """MACs of one configuration of a StitchableNet by a full fvcore trace (a cross-check of the sums)."""
    x = torch.zeros(1, *net.family.input_size, device=next(net.parameters()).device)
    return trace_macs(_Piece(lambda inp: net(inp, stitch=stitch_id), net), x)


def space_costs(family: Family, space: StitchSpace, final_norm: bool = True) -> list[Cost]:
    anchors = anchor_costs(family)
    return [config_cost(anchors, config, final_norm) for config in space]


def space_rows(family: Family, space: StitchSpace, final_norm: bool = True) -> list[dict]:
    """Every configuration as plain data with its cost: what the CLI prints and the app plots."""
    return [
        {**space.describe(config), "gmacs": cost.gmacs, "params_m": cost.params_m}
        for config, cost in zip(space, space_costs(family, space, final_norm))
    ]
