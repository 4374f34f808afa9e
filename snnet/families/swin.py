"""Swin Transformers (timm's SwinTransformer): Swin-Ti/S/B on ImageNet-1k."""
import torch
from torch import nn

from snnet.families.registry import Activation, AnchorSpec, Family, register_family
from snnet.families.stages import StagedAdapter
from snnet.tasks import IMAGENET


class SwinAdapter(StagedAdapter):
    """Patch embedding | four stages of window-attention blocks | final norm, pooling, classifier.
    timm keeps Swin's activations as N x H x W x C: tokens, channels last."""

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.patch_embed(x)

    def head(self, model: nn.Module, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        if final_norm:
            x = model.norm(x)
        return model.forward_head(x)

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.norm, model.head]

    def activation(self, channels: int, height: int, width: int) -> Activation:
        return Activation("tokens", channels, (height, width))


@register_family("swin")
def swin() -> Family:
    # The reference stitches inside stages 0-2: 41 configurations (3 anchors + 38 stitches).
    return Family(
        name="swin",
        description="Swin-Ti/S/B on ImageNet-1k (224 px, window 7), stitched inside stages 0-2",
        anchors=tuple(AnchorSpec(name, f"{name}_patch4_window7_224") for name in ("swin_tiny", "swin_small", "swin_base")),
        adapter=SwinAdapter(),
        input_size=(3, 224, 224),
        num_classes=1000,
        task=IMAGENET,
        stitch_stages=(0, 1, 2),
    )
