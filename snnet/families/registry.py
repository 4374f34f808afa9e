"""Families and the registry that maps their names to builders.

A family is an ordered list of anchors of one domain, smallest first. An adapter knows how one
kind of model splits into embed -> blocks[0..L-1] -> head, and what the activation at each point
between blocks looks like; adding a new kind of model means adding an adapter (one file per kind
under families/) and registering a family, nothing in the core.
"""
from dataclasses import dataclass, field
from math import prod
from typing import Callable, Optional, Protocol, Sequence

import torch
from torch import nn

from snnet._timm import timm
from snnet.errors import SnnetError
from snnet.space import StitchSpace, build_space, build_stage_space, build_two_way_space
from snnet.tasks import Task

LAYOUTS = ("tokens", "map")


@dataclass(frozen=True)
class Activation:
    """What flows through a stitch point, per sample: "tokens" keep channels last (N x L x C, or
    N x H x W x C as timm's Swin does), a "map" keeps them first (N x C x H x W)."""

    layout: str
    channels: int
    spatial: tuple[int, ...]  # (L,) or (H, W): the positions that lie on the image
    # Leading tokens that lie on no position of the image (timm ViT's class and register tokens,
    # `num_prefix_tokens`); a CNN's map has none.
    prefix_tokens: int = 0

    @property
    def positions(self) -> int:
        """Rows per sample: tokens (prefix tokens included), or pixels of a map."""
        return self.prefix_tokens + prod(self.spatial)

    @property
    def spatial_positions(self) -> int:
        """Positions on the image, which a stitching layer maps one to one."""
        return prod(self.spatial)


class Adapter(Protocol):
    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor: ...

    def blocks(self, model: nn.Module) -> Sequence[nn.Module]: ...

    def stage_depths(self, model: nn.Module) -> tuple[int, ...]: ...

    def points(self, model: nn.Module, input_size: tuple[int, int, int]) -> list[Optional[Activation]]:
        """The activation entering each block, then the last block's output (L + 1 entries; None
        where the model does not describe it)."""
        ...

    def head(self, model: nn.Module, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor: ...

    def head_modules(self, model: nn.Module) -> list[nn.Module]: ...

    def width(self, model: nn.Module) -> int: ...


@dataclass(frozen=True)
class AnchorSpec:
    name: str
    arch: str  # a timm model name
    depth: Optional[int] = None  # blocks, checked against the model when given
    arch_args: dict = field(default_factory=dict)  # overrides of the timm architecture
    adapter: Optional["Adapter"] = None  # this anchor's, where it differs from its family's


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    anchors: tuple[AnchorSpec, ...]
    adapter: Adapter
    input_size: tuple[int, int, int]  # channels, height, width
    num_classes: int
    task: Task  # the data it is trained and evaluated on
    zoo: tuple[AnchorSpec, ...] = ()  # separately trained networks to compare stitches with
    # Hierarchical anchors: the stages stitched inside (stage-wise space); None: one stage, paired
    stitch_stages: Optional[tuple[int, ...]] = None
    # Two parents of different architectures, recombined by snnet.evolve: they are stitched only
    # where a matching of their points puts layers, so the family's own space holds them alone.
    recombine: bool = False

    @property
    def anchor_names(self) -> tuple[str, ...]:
        return tuple(anchor.name for anchor in self.anchors)

    def adapter_for(self, index: int) -> Adapter:
        return self.anchors[index].adapter or self.adapter

    def stage_depths(self, index: int) -> tuple[int, ...]:
        """Blocks per stage of an anchor, read from its timm model (built on the meta device)."""
        key = (self.name, index)
        if key not in _STAGE_DEPTHS:
            _STAGE_DEPTHS[key] = tuple(self.adapter_for(index).stage_depths(self.build_anchor(index, "meta")))
        return _STAGE_DEPTHS[key]

    def space(self, kernel: int = 2, stride: int = 1, direction: str = "fast-to-slow") -> StitchSpace:
        if self.stitch_stages is not None:
            stage_depths = [self.stage_depths(i) for i in range(len(self.anchors))]
            return build_stage_space(self.anchor_names, stage_depths, self.stitch_stages, kernel, stride, direction)
        depths = [anchor.depth if anchor.depth is not None else sum(self.stage_depths(i))
                  for i, anchor in enumerate(self.anchors)]
        if self.recombine:
            return build_two_way_space(self.anchor_names, depths)
        return build_space(self.anchor_names, depths, kernel, stride, direction)

    def build_anchor(self, index: int, device: Optional[torch.device | str] = None) -> nn.Module:
        """A freshly initialised anchor; on the "meta" device it allocates nothing."""
        return self.build_model(self.anchors[index], device)

    def model_spec(self, name: str) -> AnchorSpec:
        for spec in self.anchors + self.zoo:
            if spec.name == name:
                return spec
        names = ", ".join(spec.name for spec in self.anchors + self.zoo)
        raise SnnetError(f"family {self.name} has no model {name!r}: choose from {names}")

    def build_model(self, spec: AnchorSpec, device: Optional[torch.device | str] = None) -> nn.Module:
        with torch.device(device or "cpu"):
            model = timm.create_model(
                spec.arch, pretrained=False, num_classes=self.num_classes, **spec.arch_args
            )
        blocks = len((spec.adapter or self.adapter).blocks(model))
        if spec.depth is not None and blocks != spec.depth:
            raise SnnetError(f"model {spec.name} has {blocks} blocks, its family declares {spec.depth}")
        return model.eval()


_STAGE_DEPTHS: dict[tuple[str, int], tuple[int, ...]] = {}

_BUILDERS: dict[str, Callable[[], Family]] = {}


def register_family(name: str):
    def register(builder: Callable[[], Family]) -> Callable[[], Family]:
        _BUILDERS[name] = builder
        return builder

    return register


def family_names() -> list[str]:
    return sorted(_BUILDERS)


def get_family(name: str) -> Family:
    if name not in _BUILDERS:
        raise SnnetError(f"unknown family {name!r}: choose from {', '.join(family_names())}")
    return _BUILDERS[name]()
