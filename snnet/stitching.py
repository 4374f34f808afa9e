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

Prefix tokens (a ViT's class token) lie on no position of the image. Between two ViTs they map
like any other token; a layer from a map (or from tokens without them) into a ViT makes them
itself, as a learnt parameter that least squares sets to the mean of the back anchor's prefix
tokens (the best constant), and a layer from a ViT into a map drops them.

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
from typing import Iterable, Optional

import torch
from torch import nn

from snnet.errors import SnnetError
from snnet.families import Activation

RULES = ("joint", "mean")


class MapToTokens(nn.Conv2d):
    """A 1x1 convolution whose output is laid out as the back anchor's tokens (CNN into ViT), after
    `prefix_tokens` learnt tokens where the back anchor has a class token (a parameter only then,
    which keeps the state-dict names of the layers without)."""

    def __init__(self, in_channels: int, out_channels: int, token_shape: tuple[int, ...], prefix_tokens: int = 0):
        super().__init__(in_channels, out_channels, 1)
        self.token_shape = token_shape  # (L,) for N x L x C, (H, W) for N x H x W x C
        if prefix_tokens:
            self.prefix = nn.Parameter(torch.zeros(prefix_tokens, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x).movedim(1, -1)  # N x H x W x C
        x = x.flatten(1, 2) if len(self.token_shape) == 1 else x
        if hasattr(self, "prefix"):
            x = torch.cat([self.prefix.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return x


class TokensToMap(nn.Linear):
    """A Linear on tokens whose output is laid out as the back anchor's feature map (ViT into CNN);
    the first `drop_tokens` tokens (a class token) have no pixel to go to."""

    def __init__(self, in_features: int, out_features: int, map_size: tuple[int, int], drop_tokens: int = 0):
        super().__init__(in_features, out_features)
        self.map_size = map_size
        self.drop_tokens = drop_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x[:, self.drop_tokens:])
        return x.reshape(x.shape[0], *self.map_size, x.shape[-1]).movedim(-1, 1)


def maps_prefix(front: Activation, back: Activation) -> bool:
    """Whether a layer maps prefix tokens like the others (both sides have as many: ViT into ViT,
    or none); else it drops the front's and makes the back's itself."""
    return front.prefix_tokens == back.prefix_tokens


def check_stitchable(front: Activation, back: Activation) -> None:
    """Positions on the image map one to one, so both sides need as many per sample."""
    if front.spatial_positions != back.spatial_positions:
        raise SnnetError(f"cannot stitch {front.spatial_positions} positions per sample into "
                         f"{back.spatial_positions} ({front} into {back})")
    if maps_prefix(front, back):
        return
    if front.layout == back.layout:
        raise SnnetError(f"cannot stitch tokens with {front.prefix_tokens} prefix tokens into tokens with "
                         f"{back.prefix_tokens} ({front} into {back})")
    if back.prefix_tokens and len(back.spatial) != 1:
        raise SnnetError(f"prefix tokens need a flat token sequence, got {back}")


def make_stitching_layer(front: Activation, back: Activation) -> nn.Module:
    """The layer joining two stitch points, by their layouts."""
    check_stitchable(front, back)
    if front.layout == back.layout:
        # nn.Linear on tokens keeps the state-dict names of the first (ViT) stitching layers
        return nn.Linear(front.channels, back.channels) if front.layout == "tokens" \
            else nn.Conv2d(front.channels, back.channels, 1)
    if front.layout == "map":
        return MapToTokens(front.channels, back.channels, back.spatial, back.prefix_tokens)
    return TokensToMap(front.channels, back.channels, back.spatial, front.prefix_tokens)


def rows(activation: torch.Tensor, layout: str) -> torch.Tensor:
    """One row of channels per position (token or pixel), in the same order for both layouts."""
    if layout == "map":
        activation = activation.movedim(1, -1)
    return activation.reshape(-1, activation.shape[-1])


@dataclass
class FitStatistics:
    """Normal-equation sums for every stitch position of a StitchableNet, in float64."""

    gram: dict = field(default_factory=dict)  # (front anchor, j, tokens skipped) -> [A 1]^T [A 1]
    cross: dict = field(default_factory=dict)  # config id -> [A 1]^T B
    target_sq: dict = field(default_factory=dict)  # config id -> ||B||^2
    prefix_sum: dict = field(default_factory=dict)  # config id -> B's prefix tokens summed over samples
    samples: int = 0


def _accumulate(table: dict, key, value) -> None:
    table[key] = table[key] + value if key in table else value


def skipped_tokens(front: Activation, back: Activation) -> tuple[int, int]:
    """Leading tokens of each side that the layer's map does not see (see `maps_prefix`)."""
    return (0, 0) if maps_prefix(front, back) else (front.prefix_tokens, back.prefix_tokens)


def _shapes(net, config) -> tuple[Activation, Activation]:
    return net.points[config.front][config.front_block + 1], net.points[config.back][config.back_block]


def _front_key(net, config) -> tuple[int, int, int]:
    # one front point gives different rows into a ViT (class token kept) and into a map (dropped)
    return config.front, config.front_block, skipped_tokens(*_shapes(net, config))[0]


def _rows(activation: torch.Tensor, shape: Activation, skip: int, with_ones: bool) -> torch.Tensor:
    found = rows(activation[:, skip:], shape.layout).double()
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
            front, back = _shapes(net, config)
            front_skip, back_skip = skipped_tokens(front, back)
            front_key, back_key = _front_key(net, config), (config.back, config.back_block, back_skip)
            if front_key not in inputs:
                found = points[(config.front, config.front_block + 1)]
                inputs[front_key] = _rows(found, front, front_skip, with_ones=True)
                _accumulate(stats.gram, front_key, inputs[front_key].T @ inputs[front_key])
            if back_key not in targets:
                targets[back_key] = _rows(points[(config.back, config.back_block)], back, back_skip, with_ones=False)
            a1, b = inputs[front_key], targets[back_key]
            if a1.shape[0] != b.shape[0]:
                raise SnnetError(f"stitch {config.id}: the anchors' position counts differ "
                                 f"({a1.shape[0]} vs {b.shape[0]} rows), they cannot be stitched")
            _accumulate(stats.cross, config.id, a1.T @ b)
            _accumulate(stats.target_sq, config.id, float((b * b).sum()))
            if back_skip:
                prefix = points[(config.back, config.back_block)][:, :back_skip].double().sum(0)
                _accumulate(stats.prefix_sum, config.id, prefix)
        stats.samples += x.shape[0]
    return stats


def _solve(gram: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """The minimum-norm M with gram @ M = cross, as LAPACK's gelsd gives it (eigenvalues below
    max(shape) x eps of the largest count as zero), from an eigendecomposition of the symmetric
    gram instead of an SVD: several times faster at ResNet-50's 2048 channels."""
    values, vectors = torch.linalg.eigh(gram)
    kept = values > values.max() * max(gram.shape) * torch.finfo(gram.dtype).eps
    inverse = torch.where(kept, 1.0 / values, torch.zeros_like(values))
    return vectors @ (inverse[:, None] * (vectors.T @ cross))


def _by_layer(net) -> dict[int, list]:
    by_layer = defaultdict(list)
    for config in fitted_stitches(net):
        by_layer[config.layer].append(config)
    return by_layer


def solve_layers(net, stats: FitStatistics, rule: str = "joint") -> dict[int, torch.Tensor]:
    """Stacked [W^T; b] (float64, (D_front + 1) x D_back) for every stitching layer."""
    if rule not in RULES:
        raise SnnetError(f"unknown least-squares rule {rule!r}: choose from {', '.join(RULES)}")
    if not stats.cross:
        raise SnnetError("no activations were collected: give at least one batch")
    solutions = {}
    for layer, configs in _by_layer(net).items():
        grams = [stats.gram[_front_key(net, c)] for c in configs]
        crosses = [stats.cross[c.id] for c in configs]
        if rule == "joint":
            solutions[layer] = _solve(sum(grams), sum(crosses))
        else:
            solutions[layer] = torch.stack([_solve(g, c) for g, c in zip(grams, crosses)]).mean(0)
    return solutions


def solve_prefixes(net, stats: FitStatistics) -> dict[int, torch.Tensor]:
    """The prefix tokens of every layer that makes its own (float64, prefix tokens x D_back): the
    mean of the back anchor's, which no map of the front's positions can predict better as a constant."""
    prefixes = {}
    for layer, configs in _by_layer(net).items():
        sums = [stats.prefix_sum[c.id] for c in configs if c.id in stats.prefix_sum]
        if sums:
            prefixes[layer] = sum(sums) / (len(sums) * stats.samples)
    return prefixes


def relative_residuals(net, stats: FitStatistics, solutions: dict[int, torch.Tensor]) -> dict[int, float]:
    """||[A 1] X - B|| / ||B|| per stitch, from the sums alone (no second pass over data)."""
    residuals = {}
    for config in fitted_stitches(net):
        x = solutions[config.layer]
        gram, cross = stats.gram[_front_key(net, config)], stats.cross[config.id]
        error_sq = (x * (gram @ x)).sum() - 2 * (x * cross).sum() + stats.target_sq[config.id]
        residuals[config.id] = float(error_sq.clamp_min(0).sqrt()) / stats.target_sq[config.id] ** 0.5
    return residuals


@torch.no_grad()
def load_solution(layer: nn.Module, x: torch.Tensor, prefix: Optional[torch.Tensor] = None) -> None:
    """Stacked [W^T; b] into any kind of stitching layer (a 1x1 convolution's weight is W x 1 x 1),
    and the prefix tokens of a layer that makes its own."""
    layer.weight.copy_(x[:-1].T.reshape(layer.weight.shape).to(layer.weight))
    layer.bias.copy_(x[-1].to(layer.bias))
    if prefix is not None:
        layer.prefix.copy_(prefix.to(layer.prefix))


def load_solutions(net, solutions: dict[int, torch.Tensor], prefixes: Optional[dict[int, torch.Tensor]] = None) -> None:
    for layer, x in solutions.items():
        load_solution(net.stitch_layers[layer], x, (prefixes or {}).get(layer))


def least_squares_init(net, batches: Iterable[torch.Tensor], rule: str = "joint") -> dict[int, float]:
    """Initialise every stitching layer of `net`; returns each stitch's relative fit residual (over
    the rows its map fits: prefix tokens a layer makes itself are left out)."""
    stats = collect_statistics(net, batches)
    solutions = solve_layers(net, stats, rule)
    load_solutions(net, solutions, solve_prefixes(net, stats))
    return relative_residuals(net, stats, solutions)
