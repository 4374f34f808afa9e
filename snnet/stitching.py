"""Stitching layers, made from the two activations they join, and their least-squares initialisation.

A stitching layer maps every position (a token, or a pixel of a feature map) of the front anchor's
activation from D_front to D_back channels, with a bias: a Linear on tokens, a 1x1 convolution on
maps, and a 1x1 convolution whose output is laid out as tokens from a map into a ViT (or a Linear
whose output is laid out as a map, the other way). For a position (j, k) it should map A, the front
anchor's output of block j, onto B, the back anchor's input of block k, position by position (the
rows of A and B: one per token or pixel of each sample): min ||[A 1] X - B||_F. We accumulate the
normal equations G = [A 1]^T [A 1] and C = [A 1]^T B in float64 over all batches and solve them
with an SVD-based least-squares solver, which also handles rank-deficient activations
(minimum-norm solution).

Only configurations of one stitch point are fitted; a path of several stitch points reuses their
layers. Positions that share a layer (a window, or a front block of a stage-wise space) are fitted by one of two rules:
  "joint": one solve over all of the window's positions, min sum_p ||[A_p 1] X - B_p||^2;
  "mean":  the SN-Net reference rule, the average of the per-position solutions.
"joint" is the default: it minimises exactly the error the shared layer makes. On the trained mini
anchors it also fits held-out samples better (relative residual 0.396 against 0.405), while the
stitches' accuracy straight after initialisation is the same within noise (50.0 % against 50.4 % on
900 validation images); `python -m snnet bench` measures both (BENCHMARKS.md).
"""
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from snnet.errors import SnnetError
from snnet.families import Activation

RULES = ("joint", "mean")


class MapToTokens(nn.Conv2d):
    """A 1x1 convolution whose output is laid out as the back anchor's tokens (CNN into ViT)."""

    def __init__(self, in_channels: int, out_channels: int, token_shape: tuple[int, ...]):
        super().__init__(in_channels, out_channels, 1)
        self.token_shape = token_shape  # (L,) for N x L x C, (H, W) for N x H x W x C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x).movedim(1, -1)  # N x H x W x C
        return x.flatten(1, 2) if len(self.token_shape) == 1 else x


class TokensToMap(nn.Linear):
    """A Linear on tokens whose output is laid out as the back anchor's feature map (ViT into CNN)."""

    def __init__(self, in_features: int, out_features: int, map_size: tuple[int, int]):
        super().__init__(in_features, out_features)
        self.map_size = map_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x.reshape(x.shape[0], *self.map_size, x.shape[-1]).movedim(-1, 1)


def make_stitching_layer(front: Activation, back: Activation) -> nn.Module:
    """The layer joining two stitch points, by their layouts. Positions map one to one, so both
    sides need as many per sample."""
    if front.positions != back.positions:
        raise SnnetError(f"cannot stitch {front.positions} positions per sample into {back.positions} "
                         f"({front} into {back})")
    if front.layout == back.layout:
        # nn.Linear on tokens keeps the state-dict names of the first (ViT) stitching layers
        return nn.Linear(front.channels, back.channels) if front.layout == "tokens" \
            else nn.Conv2d(front.channels, back.channels, 1)
    if front.layout == "map":
        return MapToTokens(front.channels, back.channels, back.spatial)
    return TokensToMap(front.channels, back.channels, back.spatial)


def rows(activation: torch.Tensor, layout: str) -> torch.Tensor:
    """One row of channels per position (token or pixel), in the same order for both layouts."""
    if layout == "map":
        activation = activation.movedim(1, -1)
    return activation.reshape(-1, activation.shape[-1])


@dataclass
class FitStatistics:
    """Normal-equation sums for every stitch position of a StitchableNet, in float64."""

    gram: dict = field(default_factory=dict)  # (front anchor, j) -> [A 1]^T [A 1]
    cross: dict = field(default_factory=dict)  # config id -> [A 1]^T B
    target_sq: dict = field(default_factory=dict)  # config id -> ||B||^2
    samples: int = 0


def _accumulate(table: dict, key, value) -> None:
    table[key] = table[key] + value if key in table else value


def _rows(net, anchor: int, point: int, activation: torch.Tensor, with_ones: bool) -> torch.Tensor:
    found = rows(activation, net.points[anchor][point].layout).double()
    return torch.cat([found, found.new_ones(found.shape[0], 1)], dim=1) if with_ones else found


def fitted_stitches(net) -> list:
    """The configurations least squares fits: those of a single stitch point."""
    return [config for config in net.space if len(config.layers) == 1]


@torch.no_grad()
def collect_statistics(net, batches: Iterable[torch.Tensor]) -> FitStatistics:
    """One pass over the batches; each anchor runs once per batch, however many stitches use it."""
    stats = FitStatistics()
    stitches = fitted_stitches(net)
    wanted = defaultdict(set)  # anchor -> points: the front's after block j, the back's before block k
    for config in stitches:
        wanted[config.front].add(config.front_block + 1)
        wanted[config.back].add(config.back_block)
    device = next(net.parameters()).device
    for x in batches:
        x = x.to(device)
        points = net.anchor_points(x, wanted)
        inputs, targets = {}, {}  # float64 rows of this batch, each shared by several positions
        for config in stitches:
            front_key, back_key = (config.front, config.front_block), (config.back, config.back_block)
            if front_key not in inputs:
                point = config.front_block + 1
                inputs[front_key] = _rows(net, config.front, point, points[(config.front, point)], with_ones=True)
                _accumulate(stats.gram, front_key, inputs[front_key].T @ inputs[front_key])
            if back_key not in targets:
                point = config.back_block
                targets[back_key] = _rows(net, config.back, point, points[(config.back, point)], with_ones=False)
            a1, b = inputs[front_key], targets[back_key]
            if a1.shape[0] != b.shape[0]:
                raise SnnetError(f"stitch {config.id}: the anchors' position counts differ "
                                 f"({a1.shape[0]} vs {b.shape[0]} rows), they cannot be stitched")
            _accumulate(stats.cross, config.id, a1.T @ b)
            _accumulate(stats.target_sq, config.id, float((b * b).sum()))
        stats.samples += x.shape[0]
    return stats


def _solve(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(gram, cross, driver="gelsd").solution


def solve_layers(net, stats: FitStatistics, rule: str = "joint") -> dict[int, torch.Tensor]:
    """Stacked [W^T; b] (float64, (D_front + 1) x D_back) for every stitching layer."""
    if rule not in RULES:
        raise SnnetError(f"unknown least-squares rule {rule!r}: choose from {', '.join(RULES)}")
    if not stats.cross:
        raise SnnetError("no activations were collected: give at least one batch")
    by_layer = defaultdict(list)
    for config in fitted_stitches(net):
        by_layer[config.layer].append(config)
    solutions = {}
    for layer, configs in by_layer.items():
        grams = [stats.gram[(c.front, c.front_block)] for c in configs]
        crosses = [stats.cross[c.id] for c in configs]
        if rule == "joint":
            solutions[layer] = _solve(sum(grams), sum(crosses))
        else:
            solutions[layer] = torch.stack([_solve(g, c) for g, c in zip(grams, crosses)]).mean(0)
    return solutions


def relative_residuals(net, stats: FitStatistics, solutions: dict[int, torch.Tensor]) -> dict[int, float]:
    """||[A 1] X - B|| / ||B|| per stitch, from the sums alone (no second pass over data)."""
    residuals = {}
    for config in fitted_stitches(net):
        x = solutions[config.layer]
        gram, cross = stats.gram[(config.front, config.front_block)], stats.cross[config.id]
        error_sq = (x * (gram @ x)).sum() - 2 * (x * cross).sum() + stats.target_sq[config.id]
        residuals[config.id] = float(error_sq.clamp_min(0).sqrt()) / stats.target_sq[config.id] ** 0.5
    return residuals


@torch.no_grad()
def load_solution(layer: nn.Module, x: torch.Tensor) -> None:
    """Stacked [W^T; b] into any kind of stitching layer (a 1x1 convolution's weight is W x 1 x 1)."""
    layer.weight.copy_(x[:-1].T.reshape(layer.weight.shape).to(layer.weight))
    layer.bias.copy_(x[-1].to(layer.bias))


def load_solutions(net, solutions: dict[int, torch.Tensor]) -> None:
    for layer, x in solutions.items():
        load_solution(net.stitch_layers[layer], x)


def least_squares_init(net, batches: Iterable[torch.Tensor], rule: str = "joint") -> dict[int, float]:
    """Initialise every stitching layer of `net`; returns each stitch's relative fit residual."""
    stats = collect_statistics(net, batches)
    solutions = solve_layers(net, stats, rule)
    load_solutions(net, solutions)
    return relative_residuals(net, stats, solutions)
