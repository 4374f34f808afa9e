"""Families and the registry that maps their names to builders.

A family is an ordered list of anchors of one domain, smallest first. An adapter knows how one
kind of model splits into embed -> blocks[0..L-1] -> head; adding a new kind of model (Swin,
ResNet, ...) means adding an adapter and registering a family, nothing in the core.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import torch
from torch import nn

from snnet._timm import timm
from snnet.errors import SnnetError
from snnet.space import StitchSpace, build_space


class Adapter(Protocol):
    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor: ...

    def blocks(self, model: nn.Module) -> Sequence[nn.Module]: ...

    def head(self, model: nn.Module, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor: ...

    def head_modules(self, model: nn.Module) -> list[nn.Module]: ...

    def width(self, model: nn.Module) -> int: ...


@dataclass(frozen=True)
class AnchorSpec:
    name: str
    arch: str  # a timm model name
    depth: int
    arch_args: dict = field(default_factory=dict)  # overrides of the timm architecture


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    anchors: tuple[AnchorSpec, ...]
    adapter: Adapter
    input_size: tuple[int, int, int]  # channels, height, width
    num_classes: int
    task: str  # the data it is trained and evaluated on: "digits" or "imagenet"
    zoo: tuple[AnchorSpec, ...] = ()  # separately trained networks to compare stitches with

    @property
    def anchor_names(self) -> tuple[str, ...]:
        return tuple(anchor.name for anchor in self.anchors)

    def space(self, kernel: int = 2, stride: int = 1, direction: str = "fast-to-slow") -> StitchSpace:
        depths = [anchor.depth for anchor in self.anchors]
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
        if len(self.adapter.blocks(model)) != spec.depth:
            raise SnnetError(f"model {spec.name} has {len(self.adapter.blocks(model))} blocks, "
                             f"its family declares {spec.depth}")
        return model.eval()


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
