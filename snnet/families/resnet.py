"""ResNets (timm's ResNet): ResNet-18/50, and ResNet-18 into Swin-Ti (a CNN stitched into a ViT)."""
import torch
from torch import nn

from snnet.families.registry import Activation, AnchorSpec, Family, register_family
from snnet.families.stages import StagedAdapter
from snnet.families.swin import SwinAdapter
from snnet.tasks import DIGITS, IMAGENET


class ResNetAdapter(StagedAdapter):
    """Stem (conv, norm, activation, max-pool) | layer1-4 of residual blocks | pooling, classifier."""

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.maxpool(model.act1(model.bn1(model.conv1(x))))

    def head(self, model: nn.Module, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        return model.forward_head(x)  # no final norm to skip

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.global_pool, model.fc]

    def activation(self, channels: int, height: int, width: int) -> Activation:
        return Activation("map", channels, (height, width))


@register_family("resnet")
def resnet() -> Family:
    # The reference stitches inside layer2 and layer3 (stages 1 and 2): 10 configurations.
    return Family(
        name="resnet",
        description="ResNet-18/50 on ImageNet-1k (224 px), stitched inside layer2 and layer3",
        anchors=(AnchorSpec("resnet18", "resnet18"), AnchorSpec("resnet50", "resnet50")),
        adapter=ResNetAdapter(),
        input_size=(3, 224, 224),
        num_classes=1000,
        task=IMAGENET,
        stitch_stages=(1, 2),
    )


@register_family("resnet-swin")
def resnet_swin() -> Family:
    # A CNN into a ViT: ResNet-18's feature maps become Swin-Ti's tokens. 8 configurations.
    return Family(
        name="resnet-swin",
        description="ResNet-18 into Swin-Ti on ImageNet-1k (224 px), stitched inside stages 1 and 2",
        anchors=(AnchorSpec("resnet18", "resnet18", adapter=ResNetAdapter()),
                 AnchorSpec("swin_tiny", "swin_tiny_patch4_window7_224", adapter=SwinAdapter())),
        adapter=ResNetAdapter(),
        input_size=(3, 224, 224),
        num_classes=1000,
        task=IMAGENET,
        stitch_stages=(1, 2),
    )


def mini_resnet(name: str, width: int, layers: tuple[int, ...] = (3, 4, 6, 3)) -> AnchorSpec:
    """A timm ResNet (basic blocks) for 1x32x32 images: stages of width, 2x, 4x and 4x that many
    channels at 8x8, 4x4, 2x2 and 1x1. The last stage stays at 4x, which keeps the weights small."""
    return AnchorSpec(
        name,
        "resnet34",
        arch_args=dict(in_chans=1, layers=layers, stem_width=width,
                       channels=(width, 2 * width, 4 * width, 4 * width)),
    )


@register_family("mini-resnet")
def mini_resnet_family() -> Family:
    # ResNet-34's design (3, 4, 6, 3 basic blocks), widths 1:2:4, stitched inside every stage but the last.
    return Family(
        name="mini-resnet",
        description="Three small ResNets for the embedded cluttered-digits task (32x32, ResNet-34 blocks)",
        # Narrow enough to stay apart on the digits task, where wider ResNets saturate (c8 94.9 %,
        # c16 96.6 % trained alone: closer than the 2 points neighbours need).
        anchors=(mini_resnet("resnet_c3", 3), mini_resnet("resnet_c6", 6), mini_resnet("resnet_c12", 12)),
        adapter=ResNetAdapter(),
        input_size=(1, 32, 32),
        num_classes=10,
        task=DIGITS,
        stitch_stages=(0, 1, 2),
        # Separately trained baselines: intermediate and wider widths, and ResNet-18's shallower design.
        zoo=(mini_resnet("resnet_c4", 4), mini_resnet("resnet_c8", 8), mini_resnet("resnet_c16", 16),
             mini_resnet("resnet18_c8", 8, (2, 2, 2, 2)), mini_resnet("resnet18_c16", 16, (2, 2, 2, 2))),
    )
