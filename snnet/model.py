"""StitchableNet: a family's anchors plus stitching layers, switching between configurations at run time."""
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from snnet.errors import SnnetError
from snnet.families import Family, get_family
from snnet.space import Config, Segment, StitchSpace
from snnet.stitching import make_stitching_layer

OnOutput = Callable[[Config, torch.Tensor], None]  # a configuration's logits
OnPoint = Callable[[int, int, torch.Tensor], None]  # (anchor, point, activation) of an anchor's own run


class StitchableNet(nn.Module):
    """All configurations of a stitch space in one module.

    Switching configuration only changes which modules the forward pass visits: nothing is
    allocated or loaded. `forward(x, stitch=id)` runs one configuration; without `stitch` it runs
    the active one (`set_stitch`), or in training mode one sampled from a seeded generator.
    `run` is the one traversal: forward, evaluation, least-squares statistics and costing use it.
    """

    def __init__(self, family: Family, anchors: Sequence[nn.Module], space: StitchSpace, seed: int = 0):
        super().__init__()
        if len(anchors) != len(space.anchors):
            raise SnnetError(f"the space has {len(space.anchors)} anchors, {len(anchors)} were given")
        self.family = family
        self.space = space
        self.adapter = family.adapter  # the family's; `adapters` holds each anchor's own
        self.adapters = [family.adapter_for(i) for i in range(len(anchors))]
        self.anchors = nn.ModuleList(anchors)
        # Plain lists, not submodules: the blocks already live (and are saved) inside the anchors.
        self.blocks = [adapter.blocks(anchor) for adapter, anchor in zip(self.adapters, anchors)]
        self.points = [adapter.points(anchor, family.input_size) for adapter, anchor in zip(self.adapters, anchors)]
        self.max_positions = max((p.positions for points in self.points for p in points if p is not None), default=1)
        self.stitch_layers = nn.ModuleList(make_stitching_layer(*self.layer_shapes(layer))
                                           for layer in range(space.num_layers))
        # The official SN-Net DeiT weights were trained with stitched paths skipping the back
        # anchor's final norm; False reproduces that, True (the default) is the correct path.
        self.final_norm = True
        self.stitch = 0
        self.last_stitch = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.sampling_weights: Optional[torch.Tensor] = None  # None: uniform over all configurations
        self._compiled_blocks: Optional[list[list[nn.Module]]] = None  # made by the first `compiled()`

    @classmethod
    def from_family(
        cls,
        family: Family | str,
        kernel: int = 2,
        stride: int = 1,
        direction: str = "fast-to-slow",
        device: Optional[torch.device | str] = None,
        seed: int = 0,
    ) -> "StitchableNet":
        family = get_family(family) if isinstance(family, str) else family
        space = family.space(kernel, stride, direction)
        anchors = [family.build_anchor(i, device) for i in range(len(family.anchors))]
        return cls(family, anchors, space, seed)

    def layer_shapes(self, layer: int):
        """(front activation, back activation) a stitching layer joins, from the first path using it."""
        for config in self.space:
            for left, used, right in config.stitch_points:
                if used == layer:
                    front = self.points[left.anchor][left.last_block + 1]
                    back = self.points[right.anchor][right.first_block]
                    if front is None or back is None:
                        raise SnnetError(f"stitching layer {layer} joins a point its anchors do not describe "
                                         f"(configuration {config.id})")
                    return front, back
        raise SnnetError(f"no configuration uses stitching layer {layer}")

    @contextmanager
    def compiled(self) -> Iterator[None]:
        """Within it, every traversal runs the blocks compiled by torch.compile (inductor's fused
        kernels: narrow blocks such as mini's spend most of their time outside the matmuls, on
        bias copies, norms and activations). For inference over many images: compiling takes tens of
        seconds, once per block shape and part size in a process; the weights stay shared."""
        eager = self.blocks
        if self._compiled_blocks is None:
            self._compiled_blocks = [[torch.compile(block, dynamic=False) for block in blocks] for blocks in eager]
        self.blocks = self._compiled_blocks
        try:
            yield
        finally:
            self.blocks = eager

    def set_stitch(self, stitch_id: int) -> Config:
        config = self.space[stitch_id]
        self.stitch = config.id
        return config

    def sample_stitch(self) -> int:
        if self.sampling_weights is None:
            return int(torch.randint(len(self.space), (1,), generator=self.generator))
        return int(torch.multinomial(self.sampling_weights, 1, generator=self.generator))

    def forward(self, x: torch.Tensor, stitch: Optional[int] = None) -> torch.Tensor:
        if stitch is None:
            stitch = self.sample_stitch() if self.training else self.stitch
        config = self.space[stitch]
        self.last_stitch = config.id
        outputs = []
        self.run(x, [config], lambda _, logits: outputs.append(logits))
        return outputs[0]

    def forward_ensemble(self, x: torch.Tensor, stitch_ids: Sequence[int]) -> torch.Tensor:
        """The mean of several configurations' logits (an ensemble), from one run: path prefixes
        they share are computed once."""
        configs = [self.space[stitch_id] for stitch_id in stitch_ids]
        found = {}
        self.run(x, configs, lambda config, logits: found.__setitem__(config.id, logits))
        return torch.stack([found[config.id] for config in configs]).mean(0)

    def run(self, x: torch.Tensor, configs: Sequence[Config], on_output: Optional[OnOutput] = None,
            on_point: Optional[OnPoint] = None) -> None:
        """Run a set of configurations on one batch, sharing path prefixes (a trie): each first
        anchor embeds and runs its blocks once, a stitching layer runs once for all paths that take
        it from the same block, and so on down the paths. `on_output(config, logits)` receives each
        configuration's output; `on_point(anchor, p, activation)` each activation of an anchor's own
        run (p = 0 after the embedding, p = b + 1 after block b). Several configurations run the
        batch in parts of about `rows_per_part` positions: faster on CPUs, and the memory in use
        does not grow with the batch."""
        parts = self._parts(len(x)) if on_point is None and len(configs) > 1 else 1
        if parts == 1:
            self._run_trie(x, configs, on_output, on_point)
            return
        outputs = defaultdict(list)  # several configurations: in parts that stay in cache, logits joined
        for part in x.tensor_split(parts):
            self._run_trie(part, configs, lambda config, logits: outputs[config.id].append(logits), None)
        for config in configs:
            if on_output is not None:
                on_output(config, torch.cat(outputs[config.id]))

    def _run_trie(self, x: torch.Tensor, configs: Sequence[Config], on_output: Optional[OnOutput],
                  on_point: Optional[OnPoint]) -> None:
        by_anchor = defaultdict(list)
        for config in configs:
            by_anchor[config.front].append((config, 0))
        for anchor, paths in by_anchor.items():
            h = self.adapters[anchor].embed(self.anchors[anchor], x)
            if on_point is not None:
                on_point(anchor, 0, h)
            self._run_segments(anchor, 0, h, paths, on_output, on_point)

    # Positions (tokens or pixels, all images together) one block call of a shared run works on.
    # On our 2-core CPUs, all 71 deit configurations on a batch of 32 (6304 tokens a call) ran no
    # faster than each configuration alone; in parts of this size 1.3x faster, mini's 1.4x
    # (python -m snnet bench). Parts of 1600 made deit faster still but mini slower.
    rows_per_part = 4096

    def _parts(self, images: int) -> int:
        return max(1, min(images, round(images * self.max_positions / self.rows_per_part)))

    def _run_segments(self, anchor: int, start: int, h: torch.Tensor, paths: list[tuple[Config, int]],
                      on_output: Optional[OnOutput], on_point: Optional[OnPoint]) -> None:
        """Blocks start.. of `anchor` for paths whose segment `i` begins there; then each path's head,
        or its next stitching layer and segment."""
        leaving = defaultdict(list)
        for config, i in paths:
            leaving[config.segments[i].last_block].append((config, i))
        for block in range(start, max(leaving) + 1):
            h = self.blocks[anchor][block](h)
            if on_point is not None:
                on_point(anchor, block + 1, h)
            onward = defaultdict(list)
            for config, i in leaving.get(block, ()):
                if i == len(config.segments) - 1:
                    if on_output is not None:
                        on_output(config, self.adapters[anchor].head(
                            self.anchors[anchor], h, final_norm=self.final_norm or config.kind == "anchor"))
                else:
                    entered = config.segments[i + 1]
                    onward[(config.layers[i], entered.anchor, entered.first_block)].append((config, i + 1))
            for (layer, next_anchor, first_block), group in onward.items():
                self._run_segments(next_anchor, first_block, self.stitch_layers[layer](h), group, on_output, None)

    def forward_front(self, config: Config, h: torch.Tensor) -> torch.Tensor:
        """The first segment of a path (blocks 0..front_block) on the embedded input."""
        found = {}
        probe = Config(-1, (config.segments[0],))
        self._run_segments(config.front, 0, h, [(probe, 0)], None, lambda _, __, out: found.update(last=out))
        return found["last"]

    def anchor_points(self, x: torch.Tensor, wanted: dict[int, set[int]]) -> dict[tuple[int, int], torch.Tensor]:
        """Activations of anchors' own runs at the wanted points, {anchor: {point, ...}}."""
        found = {}

        def keep(anchor: int, point: int, h: torch.Tensor) -> None:
            if point in wanted.get(anchor, ()):
                found[(anchor, point)] = h

        # the anchors' own paths, cut after the last point wanted (no head runs without on_output)
        probes = [Config(-1, (Segment(anchor, 0, max(points) - 1),)) for anchor, points in wanted.items() if points]
        self.run(x, probes, on_point=keep)
        return found

    def block_tokens(self, anchor: int, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations entering each block of an anchor, then its last block's output (L + 1 tensors)."""
        points = self.anchor_points(x, {anchor: set(range(len(self.blocks[anchor]) + 1))})
        return [points[(anchor, p)] for p in range(len(self.blocks[anchor]) + 1)]
