"""StitchableNet: a family's anchors plus stitching layers, switching between configurations at run time."""
from typing import Optional, Sequence

import torch
from torch import nn

from snnet.errors import SnnetError
from snnet.families import Family, get_family
from snnet.space import Config, StitchSpace


class StitchableNet(nn.Module):
    """All configurations of a stitch space in one module.

    Switching configuration only changes which modules the forward pass visits: nothing is
    allocated or loaded. `forward(x, stitch=id)` runs one configuration; without `stitch` it runs
    the active one (`set_stitch`), or in training mode one sampled from a seeded generator.
    """

    def __init__(self, family: Family, anchors: Sequence[nn.Module], space: StitchSpace, seed: int = 0):
        super().__init__()
        if len(anchors) != len(space.anchors):
            raise SnnetError(f"the space has {len(space.anchors)} anchors, {len(anchors)} were given")
        self.family = family
        self.space = space
        self.adapter = family.adapter
        self.anchors = nn.ModuleList(anchors)
        self.widths = [self.adapter.width(anchor) for anchor in anchors]
        self.stitch_layers = nn.ModuleList(
            nn.Linear(self.widths[front], self.widths[back]) for front, back in space.layer_pairs
        )
        # The official SN-Net DeiT weights were trained with stitched paths skipping the back
        # anchor's final norm; False reproduces that, True (the default) is the correct path.
        self.final_norm = True
        self.stitch = 0
        self.last_stitch = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.sampling_weights: Optional[torch.Tensor] = None  # None: uniform over all configurations

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
        front = self.anchors[config.front]
        x = self.adapter.embed(front, x)
        if config.kind == "anchor":
            for block in self.adapter.blocks(front):
                x = block(x)
            return self.adapter.head(front, x)
        return self.forward_from(config, self.forward_front(config, x))

    def forward_front(self, config: Config, tokens: torch.Tensor) -> torch.Tensor:
        """Front blocks 0..front_block on embedded tokens."""
        for block in self.adapter.blocks(self.anchors[config.front])[: config.front_block + 1]:
            tokens = block(tokens)
        return tokens

    def forward_from(self, config: Config, front_tokens: torch.Tensor) -> torch.Tensor:
        """Stitching layer, back blocks back_block..L-1 and the back head on the front's output."""
        back = self.anchors[config.back]
        x = self.stitch_layers[config.layer](front_tokens)
        for block in self.adapter.blocks(back)[config.back_block:]:
            x = block(x)
        return self.adapter.head(back, x, final_norm=self.final_norm)

    def block_tokens(self, anchor: int, x: torch.Tensor) -> list[torch.Tensor]:
        """Tokens entering each block of an anchor, then its last block's output (L + 1 tensors)."""
        model = self.anchors[anchor]
        tokens = [self.adapter.embed(model, x)]
        for block in self.adapter.blocks(model):
            tokens.append(block(tokens[-1]))
        return tokens
