"""Hierarchical timm models, read from timm's own description: `feature_info` names each stage's
module (Swin's layers.i, ResNet's layerN, LeViT's stages.i) with its channels and reduction."""
import math
from typing import Optional

from torch import nn

from snnet.families.registry import Activation


class StagedAdapter:
    """Blocks in stage order; a stage's own downsampling (Swin's patch merging, LeViT's attention
    subsampling) runs as part of its first block, so a path that enters a stage at block 0 also
    enters at its new resolution. Kinds of model say how they embed, end and lay out activations."""

    def stages(self, model: nn.Module) -> list[tuple[dict, list[nn.Module]]]:
        found = []
        for info in model.feature_info:
            stage = model.get_submodule(info["module"])
            blocks = getattr(stage, "blocks", stage)
            if not isinstance(blocks, nn.Sequential):
                continue  # not a stage of blocks, e.g. ResNet's stem activation
            blocks = list(blocks)
            downsample = getattr(stage, "downsample", None)
            if downsample is not None and not isinstance(downsample, nn.Identity):
                blocks[0] = nn.Sequential(downsample, blocks[0])  # a view: registers nothing in `model`
            found.append((info, blocks))
        return found

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return [block for _, blocks in self.stages(model) for block in blocks]

    def stage_depths(self, model: nn.Module) -> tuple[int, ...]:
        return tuple(len(blocks) for _, blocks in self.stages(model))

    def points(self, model: nn.Module, input_size: tuple[int, int, int]) -> list[Optional[Activation]]:
        # What enters a stage's first block is the previous stage's output (or the stem's), which
        # feature_info does not describe: stage-wise spaces never enter a stage at its first block.
        points: list[Optional[Activation]] = [None]
        for info, blocks in self.stages(model):
            height, width = (math.ceil(size / info["reduction"]) for size in input_size[1:])
            points += [self.activation(info["num_chs"], height, width)] * len(blocks)
        return points

    def activation(self, channels: int, height: int, width: int) -> Activation:
        raise NotImplementedError

    def width(self, model: nn.Module) -> int:
        return model.feature_info[-1]["num_chs"]
