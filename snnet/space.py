"""The stitch configuration space: which networks one family of anchors can run. Pure data.

A configuration is a path: segments (anchor, first block, last block) joined by stitching layers.
An anchor is a path of one segment, a stitch of two; nothing stops a path from holding several
stitch points. Block indices count an anchor's blocks from its first, across stages.

Ids follow the SN-Net reference code so that official checkpoints and published per-stitch
figures line up id for id: the anchors first (smallest first), then each stitched pair of
neighbouring anchors in turn (stage by stage for hierarchical anchors), each pair's positions in
the order its windows first see them.

A position (front_block j, back_block k) runs front blocks 0..j, a stitching layer, then back
blocks k..L-1 and the back anchor's head. All positions first seen in one window share that
window's stitching layer.
"""
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from snnet.errors import SnnetError

Position = tuple[int, int]
DIRECTIONS = ("fast-to-slow", "slow-to-fast")


@dataclass(frozen=True)
class Segment:
    """Blocks first_block..last_block (inclusive) of one anchor."""

    anchor: int
    first_block: int
    last_block: int


@dataclass(frozen=True)
class Config:
    """One runnable network: segments of anchors, each joined to the next by a stitching layer."""

    id: int
    segments: tuple[Segment, ...]
    layers: tuple[int, ...] = ()  # layers[i] joins segments[i] to segments[i + 1]
    stage: Optional[int] = None  # the stage its stitch point lies in, for hierarchical anchors

    @property
    def kind(self) -> str:
        return "anchor" if len(self.segments) == 1 else "stitch"

    # The names of a single stitch, which the CLI, the store and the app speak: a path's first
    # anchor, its last, where it leaves the first and where it enters the last, its first layer.
    @property
    def front(self) -> int:
        return self.segments[0].anchor

    @property
    def back(self) -> int:
        return self.segments[-1].anchor

    @property
    def front_block(self) -> Optional[int]:
        return None if self.kind == "anchor" else self.segments[0].last_block

    @property
    def back_block(self) -> Optional[int]:
        return None if self.kind == "anchor" else self.segments[-1].first_block

    @property
    def layer(self) -> Optional[int]:
        return self.layers[0] if self.layers else None

    @property
    def stitch_points(self) -> list[tuple[Segment, int, Segment]]:
        """(segment left, layer, segment entered) at each stitch point of the path."""
        return [(self.segments[i], layer, self.segments[i + 1]) for i, layer in enumerate(self.layers)]


@dataclass(frozen=True)
class StitchSpace:
    anchors: tuple[str, ...]
    depths: tuple[int, ...]  # blocks per anchor, all stages together
    configs: tuple[Config, ...]
    layer_pairs: tuple[tuple[int, int], ...]  # (front anchor, back anchor) of each stitching layer
    kernel: int
    stride: int
    direction: str
    stage_depths: tuple[tuple[int, ...], ...] = ()  # blocks per stage of each anchor, if hierarchical

    def __len__(self) -> int:
        return len(self.configs)

    def __iter__(self):
        return iter(self.configs)

    def __getitem__(self, stitch_id: int) -> Config:
        if isinstance(stitch_id, bool) or not isinstance(stitch_id, int):
            raise SnnetError(f"stitch id must be an integer, got {stitch_id!r}")
        if not 0 <= stitch_id < len(self.configs):
            raise SnnetError(
                f"stitch id {stitch_id} is out of range: this space has ids 0-{len(self.configs) - 1}"
            )
        return self.configs[stitch_id]

    @property
    def num_layers(self) -> int:
        return len(self.layer_pairs)

    def describe(self, config: Config) -> dict:
        """Plain-data view of a configuration, the shape the CLI and the store share; a path of
        several stitch points also lists its segments and layers."""
        row = {
            "id": config.id,
            "kind": config.kind,
            "front": self.anchors[config.front],
            "back": self.anchors[config.back],
            "front_block": config.front_block,
            "back_block": config.back_block,
            "layer": config.layer,
        }
        if len(config.layers) > 1:
            row["path"] = [[self.anchors[s.anchor], s.first_block, s.last_block] for s in config.segments]
            row["layers"] = list(config.layers)
        return row

    def with_paths(self, paths: Sequence[tuple[Sequence[Segment], Sequence[int]]]) -> "StitchSpace":
        """This space plus configurations given as (segments, layers), reusing its stitching layers."""
        configs = list(self.configs)
        for segments, layers in paths:
            config = Config(len(configs), tuple(segments), tuple(layers))
            check_path(self, config)
            configs.append(config)
        return replace(self, configs=tuple(configs))


def check_path(space: StitchSpace, config: Config) -> None:
    """A path runs from an anchor's first block to another's head, each layer joining its two anchors."""
    segments = config.segments
    if len(config.layers) != len(segments) - 1:
        raise SnnetError(f"configuration {config.id}: {len(segments)} segments need {len(segments) - 1} layers")
    if segments[0].first_block != 0 or segments[-1].last_block != space.depths[segments[-1].anchor] - 1:
        raise SnnetError(f"configuration {config.id} must start at a first block and end at a last block")
    for segment in segments:
        if not 0 <= segment.first_block <= segment.last_block < space.depths[segment.anchor]:
            raise SnnetError(f"configuration {config.id}: {segment} is outside its anchor's blocks")
    for left, layer, right in config.stitch_points:
        if not 0 <= layer < space.num_layers or space.layer_pairs[layer] != (left.anchor, right.anchor):
            raise SnnetError(f"configuration {config.id}: layer {layer} does not join anchors "
                             f"{left.anchor} and {right.anchor}")


def stitch(config_id: int, front: int, back: int, position: Position, layer: int, back_depth: int,
           stage: Optional[int] = None) -> Config:
    j, k = position
    return Config(config_id, (Segment(front, 0, j), Segment(back, k, back_depth - 1)), (layer,), stage)


def anchor_configs(depths: Sequence[int]) -> list[Config]:
    return [Config(i, (Segment(i, 0, depth - 1),)) for i, depth in enumerate(depths)]


def paired_windows(depth: int, kernel: int = 2, stride: int = 1) -> list[list[Position]]:
    """Positions each sliding window sees first; one stitching layer per non-empty window.

    A window covers blocks [i, i + kernel) of both anchors and pairs every front block with every
    back block in it (paired stitching). With kernel 2 and stride 1, window 0 gives (0,0), (0,1),
    (1,0), (1,1) and window w >= 1 gives (w,w+1), (w+1,w), (w+1,w+1).
    """
    if depth < 1:
        raise SnnetError(f"depth must be at least 1, got {depth}")
    if not 1 <= kernel <= depth:
        raise SnnetError(f"kernel must be between 1 and the anchors' depth {depth}, got {kernel}")
    if stride < 1:
        raise SnnetError(f"stride must be at least 1, got {stride}")
    seen: set[Position] = set()
    windows = []
    for start in range(0, depth, stride):
        blocks = range(start, min(start + kernel, depth))
        new = [(j, k) for j in blocks for k in blocks if (j, k) not in seen]
        seen.update(new)
        if new:
            windows.append(new)
    return windows


def neighbour_pairs(num_anchors: int, direction: str) -> list[tuple[int, int]]:
    """(front, back) anchor pairs: nearest neighbours, small to big (Fast-to-Slow) or the reverse."""
    if direction not in DIRECTIONS:
        raise SnnetError(f"unknown direction {direction!r}: choose from {', '.join(DIRECTIONS)}")
    pairs = [(i, i + 1) for i in range(num_anchors - 1)]
    return pairs if direction == "fast-to-slow" else [(b, f) for f, b in pairs]


def build_space(
    anchors: Sequence[str],
    depths: Sequence[int],
    kernel: int = 2,
    stride: int = 1,
    direction: str = "fast-to-slow",
    windows: Optional[Sequence[Sequence[Position]]] = None,
) -> StitchSpace:
    """The configuration space of a family: its anchors, then every stitch of neighbouring pairs.

    `windows` replaces the paired sliding windows with explicit groups of positions (each group
    shares one stitching layer), for stitching at chosen places only.
    """
    if not anchors:
        raise SnnetError("a family needs at least one anchor")
    if len(anchors) != len(depths):
        raise SnnetError(f"{len(anchors)} anchors but {len(depths)} depths")
    pairs = neighbour_pairs(len(anchors), direction)
    if pairs and len(set(depths)) != 1:
        raise SnnetError(f"paired stitching needs anchors of equal depth, got depths {list(depths)}")
    depth = depths[0]
    if windows is None:
        windows = paired_windows(depth, kernel, stride) if pairs else []
    else:
        windows = [[tuple(position) for position in window] for window in windows]
        for j, k in (position for window in windows for position in window):
            if not (0 <= j < depth and 0 <= k < depth):
                raise SnnetError(f"position ({j}, {k}) is outside blocks 0-{depth - 1}")

    layers = [(front, back, window, None) for front, back in pairs for window in windows]
    return _assemble(anchors, depths, layers, kernel, stride, direction)


def _assemble(anchors: Sequence[str], depths: Sequence[int], layers, kernel: int, stride: int, direction: str,
              stage_depths: Sequence[Sequence[int]] = ()) -> StitchSpace:
    """The anchors, then each stitching layer's positions in turn: `layers` lists (front anchor,
    back anchor, positions as (front block, back block), stage or None), one entry per layer."""
    configs = anchor_configs(depths)
    for layer, (front, back, positions, stage) in enumerate(layers):
        for position in positions:
            configs.append(stitch(len(configs), front, back, position, layer, depths[back], stage))
    return StitchSpace(
        anchors=tuple(anchors),
        depths=tuple(depths),
        configs=tuple(configs),
        layer_pairs=tuple((front, back) for front, back, _, _ in layers),
        kernel=kernel,
        stride=stride,
        direction=direction,
        stage_depths=tuple(tuple(d) for d in stage_depths),
    )


def build_two_way_space(anchors: Sequence[str], depths: Sequence[int],
                        pairs: Sequence[Position] = ()) -> StitchSpace:
    """Two anchors of any architectures stitched both ways at matched points (snnet.evolve).

    A pair (i, j) matches point i of anchor 0 with point j of anchor 1 (what enters block i and
    block j): it gives layer 2k, from 0 into 1 (blocks 0..i-1 of 0, then j.. of 1), and layer
    2k + 1, from 1 into 0 (blocks 0..j-1 of 1, then i.. of 0), for the k-th pair. Without pairs the
    space holds the two anchors alone.
    """
    if len(anchors) != 2 or len(depths) != 2:
        raise SnnetError(f"two-way stitching joins two anchors, got {len(anchors)}")
    layers = []
    for i, j in pairs:
        if not (0 < i < depths[0] and 0 < j < depths[1]):
            raise SnnetError(f"matched points ({i}, {j}) must lie between blocks: 1-{depths[0] - 1} "
                             f"and 1-{depths[1] - 1}")
        layers += [(0, 1, [(i - 1, j)], None), (1, 0, [(j - 1, i)], None)]
    return _assemble(anchors, depths, layers, kernel=1, stride=1, direction="two-way")


def unpaired_windows(front_depth: int, back_depth: int) -> list[list[Position]]:
    """Positions of a stage where the back anchor is deeper: each back block k maps to front block
    j = nearest(k) (nearest-neighbour interpolation of the front's block ids onto the back's), and
    (j, k) is a stitch when j < k. One stitching layer per front block serves all its positions."""
    if front_depth > back_depth:
        raise SnnetError(f"unpaired stitching goes from the shallower stage to the deeper one, got "
                         f"{front_depth} front blocks and {back_depth} back blocks")
    windows = [[(k * front_depth // back_depth, k) for k in range(back_depth)
                if k * front_depth // back_depth == j and j < k] for j in range(front_depth)]
    return [window for window in windows if window]


def stage_windows(front_depth: int, back_depth: int, kernel: int, stride: int) -> list[list[Position]]:
    """Positions inside one stage: paired windows when both anchors have as many blocks there,
    else unpaired. Hierarchical anchors keep only forward positions (j < k), as the reference does:
    the path then runs as many blocks as the back anchor or fewer."""
    if front_depth != back_depth:
        return unpaired_windows(front_depth, back_depth)
    windows = [[(j, k) for j, k in window if j < k] for window in paired_windows(front_depth, min(kernel, front_depth), stride)]
    return [window for window in windows if window]


def build_stage_space(
    anchors: Sequence[str],
    stage_depths: Sequence[Sequence[int]],
    stages: Sequence[int],
    kernel: int = 2,
    stride: int = 1,
    direction: str = "fast-to-slow",
) -> StitchSpace:
    """The space of hierarchical anchors: stitch only inside a stage, one of `stages` (never the
    last, where the anchors' heads differ), stage by stage, each stage pair by pair."""
    if not anchors:
        raise SnnetError("a family needs at least one anchor")
    if len(anchors) != len(stage_depths):
        raise SnnetError(f"{len(anchors)} anchors but {len(stage_depths)} stage depths")
    if kernel < 1:
        raise SnnetError(f"kernel must be at least 1, got {kernel}")
    if stride < 1:
        raise SnnetError(f"stride must be at least 1, got {stride}")
    depths = [sum(d) for d in stage_depths]
    pairs = neighbour_pairs(len(anchors), direction)
    for stage in stages:
        if any(not 0 <= stage < len(d) - 1 for d in stage_depths):
            raise SnnetError(f"stage {stage} is not a stage every anchor has before its last")
    layers = []
    for stage in stages:
        for front, back in pairs:
            front_start, back_start = sum(stage_depths[front][:stage]), sum(stage_depths[back][:stage])
            for window in stage_windows(stage_depths[front][stage], stage_depths[back][stage], kernel, stride):
                layers.append((front, back, [(front_start + j, back_start + k) for j, k in window], stage))
    return _assemble(anchors, depths, layers, kernel, stride, direction, stage_depths)
