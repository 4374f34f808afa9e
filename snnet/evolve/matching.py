"""Which points of two parents to stitch: a matching of their stitch points.

A point is what enters a block (point p enters block p; the last point is the last block's
output), as the adapters describe it. A candidate pair joins point i of parent A and point j of
parent B where a stitching layer can go both ways: as many positions on the image (a ViT's class
token aside, see snnet.stitching), and neither the embedding's output (point 0, which stitching
would only re-embed) nor a final output (what follows is the head alone).

Each candidate is weighted by how alike its two activations are, linear CKA on a batch of images
as the paper does, or by 1 when no images are given (structure alone). A maximum-weight matching
then uses each point at most once. With stitches both ways the merged network is acyclic exactly
when the matched pairs are monotone (i < i' implies j < j'): a crossing pair (i < i', j > j')
lets A's block i flow into B's block j' and on, through B's block j - 1, back into A's block i.
So we keep the heaviest increasing chain of matched pairs.
"""
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

import torch
from scipy.optimize import linear_sum_assignment

from snnet.errors import SnnetError
from snnet.families import Activation
from snnet.stitching import check_stitchable, rows

Position = tuple[int, int]  # (point of A, point of B)

ENDS = "embedding input or final output"
UNDESCRIBED = "not described"
SHAPE = "shape mismatch"
LOWER = "lower weight in matching"
CYCLE = "would create a cycle"


@dataclass(frozen=True)
class Matching:
    pairs: tuple[Position, ...]  # increasing in both parents
    weights: dict[Position, float] = field(default_factory=dict)  # every candidate's
    rejected: dict[Position, str] = field(default_factory=dict)  # every other pair of points, and why

    @property
    def weight(self) -> float:
        return sum(self.weights[pair] for pair in self.pairs)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(self.rejected.values()))


def candidates(points_a: Sequence[Optional[Activation]],
               points_b: Sequence[Optional[Activation]]) -> tuple[list[Position], dict[Position, str]]:
    """Pairs of points a layer can join both ways, and every other pair with the reason why not."""
    found, rejected = [], {}
    for i, a in enumerate(points_a):
        for j, b in enumerate(points_b):
            if i in (0, len(points_a) - 1) or j in (0, len(points_b) - 1):
                rejected[(i, j)] = ENDS
            elif a is None or b is None:
                rejected[(i, j)] = UNDESCRIBED
            else:
                try:
                    check_stitchable(a, b)
                    check_stitchable(b, a)
                    found.append((i, j))
                except SnnetError:
                    rejected[(i, j)] = SHAPE
    return found, rejected


def max_weight_matching(weights: Mapping[Position, float]) -> list[Position]:
    """Candidates, each point used at most once, of the largest total weight (weights >= 0).

    Pairs that are no candidates weigh 0 in the assignment and are dropped from its answer: with
    non-negative weights every matching extends to a full assignment at no loss."""
    if any(w < 0 for w in weights.values()):
        raise SnnetError("candidate weights must be non-negative")
    if not weights:
        return []
    rows_a = sorted({i for i, _ in weights})
    cols_b = sorted({j for _, j in weights})
    table = torch.zeros(len(rows_a), len(cols_b), dtype=torch.float64)
    for (i, j), w in weights.items():
        table[rows_a.index(i), cols_b.index(j)] = w
    chosen = zip(*linear_sum_assignment(table.numpy(), maximize=True))
    return sorted((rows_a[r], cols_b[c]) for r, c in chosen if (rows_a[r], cols_b[c]) in weights)


def heaviest_chain(pairs: Sequence[Position], weights: Mapping[Position, float]) -> list[Position]:
    """The heaviest subset of matched pairs increasing in both parents (dynamic programming over
    pairs sorted by A's point; each point of A appears once in a matching)."""
    pairs = sorted(pairs)
    best, before = [], []  # best[t]: weight of the heaviest chain ending at pairs[t]; before[t]: its previous
    for t, (_, j) in enumerate(pairs):
        options = [(best[s], s) for s in range(t) if pairs[s][1] < j]
        weight, previous = max(options, default=(0.0, None))
        best.append(weight + weights[pairs[t]])
        before.append(previous)
    chain, t = [], max(range(len(pairs)), key=best.__getitem__, default=None)
    while t is not None:
        chain.append(pairs[t])
        t = before[t]
    return chain[::-1]


def match(points_a: Sequence[Optional[Activation]], points_b: Sequence[Optional[Activation]],
          weights: Optional[Mapping[Position, float]] = None) -> Matching:
    """Match two parents' points; `weights` gives each candidate's (e.g. `cka_weights`), 1 if None."""
    found, rejected = candidates(points_a, points_b)
    weights = {pair: 1.0 for pair in found} if weights is None else {pair: float(weights[pair]) for pair in found}
    matched = max_weight_matching(weights)
    chain = heaviest_chain(matched, weights)
    rejected.update({pair: LOWER for pair in found if pair not in matched})
    rejected.update({pair: CYCLE for pair in matched if pair not in chain})
    return Matching(tuple(chain), weights, rejected)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two sets of rows (n x p and n x q, one row per observation): 1 for the same
    features up to a rotation and a scale, near 0 for unrelated ones."""
    return _CkaSums.of(x, y).cka()


@dataclass
class _CkaSums:
    """Sums over rows from which linear CKA follows, accumulated batch by batch in float64:
    CKA = ||Cxy||^2 / (||Cxx|| ||Cyy||), C the centred (cross-)covariances, ||.|| Frobenius."""

    n: int
    sum_x: torch.Tensor
    sum_y: torch.Tensor
    xx: torch.Tensor
    yy: torch.Tensor
    xy: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor) -> "_CkaSums":
        x, y = x.double(), y.double()
        return cls(x.shape[0], x.sum(0), y.sum(0), x.T @ x, y.T @ y, x.T @ y)

    def add(self, other: "_CkaSums") -> "_CkaSums":
        return _CkaSums(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))

    def cka(self) -> float:
        def centred(s, u, v):
            return s - torch.outer(u, v) / self.n

        cross = centred(self.xy, self.sum_x, self.sum_y).square().sum()
        norms = centred(self.xx, self.sum_x, self.sum_x).norm() * centred(self.yy, self.sum_y, self.sum_y).norm()
        return float(cross / norms) if norms > 0 else 0.0


def _image_rows(activation: torch.Tensor, point: Activation) -> torch.Tensor:
    # Rows are positions on the image, pooled over samples and positions alike: position p of A is
    # paired with position p of B, the pairing a stitching layer maps. Class tokens have no partner.
    return rows(activation[:, point.prefix_tokens:], point.layout)


@torch.no_grad()
def cka_weights(net, batches: Iterable[torch.Tensor], pairs: Sequence[Position]) -> dict[Position, float]:
    """Linear CKA of each pair's two activations (anchor 0's point i, anchor 1's point j) of a
    StitchableNet over the batches; each parent runs once per batch."""
    wanted = {0: {i for i, _ in pairs}, 1: {j for _, j in pairs}}
    sums: dict[Position, _CkaSums] = {}
    device = next(net.parameters()).device
    for x in batches:
        found = net.anchor_points(x.to(device), wanted)
        for i, j in pairs:
            batch = _CkaSums.of(_image_rows(found[(0, i)], net.points[0][i]),
                                _image_rows(found[(1, j)], net.points[1][j]))
            sums[(i, j)] = sums[(i, j)].add(batch) if (i, j) in sums else batch
    if pairs and not sums:
        raise SnnetError("no images were given: give at least one batch, or none for structural weights")
    return {pair: s.cka() for pair, s in sums.items()}


def match_parents(net, batches: Optional[Iterable[torch.Tensor]] = None) -> Matching:
    """Match the points of a StitchableNet's two anchors, by CKA over the batches when given."""
    if len(net.anchors) != 2:
        raise SnnetError(f"matching joins two parents, got {len(net.anchors)} anchors")
    found, _ = candidates(net.points[0], net.points[1])
    weights = None if batches is None else cka_weights(net, batches, found)
    return match(net.points[0], net.points[1], weights)
