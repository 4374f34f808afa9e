"""LeViT (timm's LevitDistilled): LeViT-192/256 on ImageNet-1k."""
import torch
from torch import nn

from snnet.families.registry import Activation, AnchorSpec, Family, register_family
from snnet.families.stages import StagedAdapter
from snnet.tasks import IMAGENET


class LevitAdapter(StagedAdapter):
    """Convolutional stem | three stages of attention blocks on N x L x C tokens | pooling and the
    two classifiers (class and distillation), averaged at inference."""

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = model.stem(x)
        return x if model.use_conv else x.flatten(2).transpose(1, 2)

    def head(self, model: nn.Module, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        return model.forward_head(x)  # no final norm to skip

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        return [model.head, model.head_dist]

    def activation(self, channels: int, height: int, width: int) -> Activation:
        return Activation("tokens", channels, (height * width,))


@register_family("levit")
def levit() -> Family:
    # The reference stitches inside stages 0 and 1: 8 configurations.
    return Family(
        name="levit",
        description="LeViT-192/256 on ImageNet-1k (224 px), stitched inside stages 0 and 1",
        anchors=(AnchorSpec("levit_192", "levit_192"), AnchorSpec("levit_256", "levit_256")),
        adapter=LevitAdapter(),
        input_size=(3, 224, 224),
        num_classes=1000,
        task=IMAGENET,
        stitch_stages=(0, 1),
    )
