"""The stitch configuration space: which networks one family of anchors can run. Pure data.

Ids follow the SN-Net reference code so that official checkpoints and published per-stitch
figures line up id for id: the anchors first (smallest first), then each stitched pair of
neighbouring anchors in turn, each pair's positions in the order its sliding windows first see them.

A position (front_block j, back_block k) runs front blocks 0..j, a stitching layer, then back
blocks k..L-1 and the back anchor's head. All positions first seen in one window share that
window's stitching layer.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

from snnet.errors import SnnetError

Position = tuple[int, int]
DIRECTIONS = ("fast-to-slow", "slow-to-fast")


@dataclass(frozen=True)
class Config:
    """One runnable network: an anchor (front == back) or a stitch of two anchors."""

    id: int
    front: int  # anchor index
    back: int
    front_block: Optional[int] = None
    back_block: Optional[int] = None
    layer: Optional[int] = None  # stitching layer index, None for an anchor

    @property
    def kind(self) -> str:
        return "anchor" if self.layer is None else "stitch"


@dataclass(frozen=True)
class StitchSpace:
    anchors: tuple[str, ...]
    depths: tuple[int, ...]
    configs: tuple[Config, ...]
    layer_pairs: tuple[tuple[int, int], ...]  # (front anchor, back anchor) of each stitching layer
    kernel: int
    stride: int
    direction: str

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
        """Plain-data view of a configuration, the shape the CLI and the store share."""
        return {
            "id": config.id,
            "kind": config.kind,
            "front": self.anchors[config.front],
            "back": self.anchors[config.back],
            "front_block": config.front_block,
            "back_block": config.back_block,
            "layer": config.layer,
        }


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

    configs = [Config(id=i, front=i, back=i) for i in range(len(anchors))]
    layer_pairs = []
    for front, back in pairs:
        for window in windows:
            layer = len(layer_pairs)
            layer_pairs.append((front, back))
            for j, k in window:
                configs.append(Config(len(configs), front, back, j, k, layer))
    return StitchSpace(
        anchors=tuple(anchors),
        depths=tuple(depths),
        configs=tuple(configs),
        layer_pairs=tuple(layer_pairs),
        kernel=kernel,
        stride=stride,
        direction=direction,
    )
