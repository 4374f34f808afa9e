"""The supernetwork of two parents, and its offspring as configurations of a stitch space.

Every matched pair of points gets a stitching layer each way (snnet.space.build_two_way_space:
for the k-th pair, layer 2k from parent A into B and layer 2k + 1 from B into A), and every layer
a switch. A switch sits where its layer arrives: on, the block the layer enters takes the other
parent's activation through the layer instead of its own previous block's output. An output
switch picks A's head (0), B's head (1), or both with their logits averaged (2).

A genotype is one int per switch: (switch of layer 0, ..., switch of layer 2m - 1, output).
Decoding traces back from the chosen head: walking down a parent's blocks, an "on" switch at a
matched point moves the path to the other parent, at that parent's matched point. Every block
takes its input from one source, so each head's trace is a path of the space; the ensemble is the
two paths, which share whatever prefix they have in common. Switches no trace reads are inactive:
the parts they would route are pruned, so a genotype's cost is that of its paths alone. Where the
offspring starts is where its trace ends, so no gene says it.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from snnet.cost import Cost, anchor_costs, ensemble_cost
from snnet.errors import SnnetError
from snnet.families import Family, get_family
from snnet.model import StitchableNet
from snnet.space import Segment, build_two_way_space

Position = tuple[int, int]  # (point of A, point of B)
Path = tuple[tuple[Segment, ...], tuple[int, ...]]  # segments and the layers joining them
OUTPUTS = ("A", "B", "ensemble")
ENSEMBLE = 2


@dataclass(frozen=True)
class Genome:
    """How genotypes of a supernetwork decode: its matched pairs and its parents' depths. Pure data."""

    pairs: tuple[Position, ...]  # increasing in both parents
    depths: tuple[int, int]

    @property
    def length(self) -> int:
        return 2 * len(self.pairs) + 1

    def entering(self, parent: int, k: int) -> int:
        """The layer of the k-th pair that enters `parent` (2k enters B, 2k + 1 enters A)."""
        return 2 * k + (1 if parent == 0 else 0)

    def check(self, genotype: Sequence[int]) -> tuple[int, ...]:
        genotype = tuple(genotype)
        if len(genotype) != self.length:
            raise SnnetError(f"a genotype here has {self.length} genes (a switch per stitching layer, then the "
                             f"output), got {len(genotype)}")
        if any(isinstance(g, bool) or not isinstance(g, int) for g in genotype):
            raise SnnetError(f"genes are integers, got {genotype}")
        if any(g not in (0, 1) for g in genotype[:-1]):
            raise SnnetError(f"switches are 0 (stay) or 1 (take the other parent's), got {genotype[:-1]}")
        if genotype[-1] not in range(len(OUTPUTS)):
            raise SnnetError(f"the output switch is 0 (A), 1 (B) or 2 (ensemble), got {genotype[-1]}")
        return genotype

    def heads(self, genotype: Sequence[int]) -> tuple[int, ...]:
        return (0, 1) if genotype[-1] == ENSEMBLE else (genotype[-1],)

    def trace(self, genotype: Sequence[int], head: int) -> tuple[Path, list[int]]:
        """The path that ends in `head`'s head, and the switches it reads on the way back."""
        parent, last = head, self.depths[head] - 1  # the current segment runs up to block `last`
        segments, layers, read = [], [], []
        for k in reversed(range(len(self.pairs))):
            layer = self.entering(parent, k)
            read.append(layer)
            if genotype[layer]:
                first = self.pairs[k][parent]
                segments.append(Segment(parent, first, last))
                layers.append(layer)
                parent = 1 - parent
                last = self.pairs[k][parent] - 1
        segments.append(Segment(parent, 0, last))
        return (tuple(segments[::-1]), tuple(layers[::-1])), read

    def decode(self, genotype: Sequence[int]) -> tuple[Path, ...]:
        """The paths of a genotype's offspring: one, or two whose logits are averaged."""
        genotype = self.check(genotype)
        return tuple(self.trace(genotype, head)[0] for head in self.heads(genotype))

    def active_key(self, genotype: Sequence[int]) -> tuple[int, ...]:
        """The genotype with every switch no trace reads set to 0: genotypes share a key exactly when
        they run the same paths (the read switches and the output say which), and a key decodes
        to the paths of every genotype that maps to it."""
        genotype = self.check(genotype)
        read = {layer for head in self.heads(genotype) for layer in self.trace(genotype, head)[1]}
        return tuple(g if i in read else 0 for i, g in enumerate(genotype[:-1])) + (genotype[-1],)


class Supernet(StitchableNet):
    """Two parents (anchors 0 and 1 of a family) stitched both ways at matched points.

    Its space starts as the parents and one single stitch per layer (what least squares fits);
    an offspring's paths join it when first asked for, and keep their ids from then on.
    """

    def __init__(self, family: Family, anchors: Sequence[nn.Module], pairs: Sequence[Position] = (), seed: int = 0):
        if len(anchors) != 2:
            raise SnnetError(f"a supernetwork recombines two parents, got {len(anchors)} anchors")
        depths = tuple(len(family.adapter_for(i).blocks(anchor)) for i, anchor in enumerate(anchors))
        pairs = tuple(tuple(pair) for pair in pairs)
        if any(not (a[0] < b[0] and a[1] < b[1]) for a, b in zip(pairs, pairs[1:])):
            raise SnnetError(f"matched pairs must increase in both parents (else the network has a cycle), got {pairs}")
        super().__init__(family, anchors, build_two_way_space(family.anchor_names, depths, pairs), seed)
        self.genome = Genome(pairs, depths)
        self._ids = {(config.segments, config.layers): config.id for config in self.space}

    @classmethod
    def from_family(cls, family: Family | str, pairs: Sequence[Position] = (),
                    device: Optional[torch.device | str] = None, seed: int = 0) -> "Supernet":
        family = get_family(family) if isinstance(family, str) else family
        return cls(family, [family.build_anchor(i, device) for i in range(len(family.anchors))], pairs, seed)

    def active_key(self, genotype: Sequence[int]) -> tuple[int, ...]:
        """A cache key for what a genotype runs (see Genome.active_key)."""
        return self.genome.active_key(genotype)

    def offspring(self, genotype: Sequence[int]) -> tuple[int, ...]:
        """Configuration ids of a genotype's offspring: one, or the two whose logits are averaged."""
        paths = self.genome.decode(genotype)
        new = [path for path in dict.fromkeys(paths) if path not in self._ids]
        if new:
            first = len(self.space)
            self.space = self.space.with_paths(new)
            self._ids.update({path: first + n for n, path in enumerate(new)})
        return tuple(self._ids[path] for path in paths)

    def forward_genotype(self, x: torch.Tensor, genotype: Sequence[int]) -> torch.Tensor:
        ids = self.offspring(genotype)
        return self(x, stitch=ids[0]) if len(ids) == 1 else self.forward_ensemble(x, ids)

    def offspring_cost(self, genotype: Sequence[int]) -> Cost:
        """Exact MACs and parameters of what the offspring runs (shared prefixes once)."""
        configs = [self.space[i] for i in self.offspring(genotype)]
        return ensemble_cost(anchor_costs(self.family), configs, self.final_norm)
