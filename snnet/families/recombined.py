"""Parents of different architectures, recombined by snnet.evolve (stitching for neuroevolution).

Each family holds two anchors that share a task and input size but not a design; snnet.evolve
matches their stitch points and builds the supernetwork of their offspring. These families are
not in the registry: they have no space of their own to explore until a matching gives them one.
"""
from dataclasses import replace

from snnet.families.registry import AnchorSpec, Family
from snnet.families.resnet import ResNetAdapter, mini_resnet
from snnet.families.vit import ViTAdapter, mini_vit
from snnet.tasks import DIGITS, IMAGENET


def mini_vit_resnet() -> Family:
    # The mini family's smallest ViT (65 tokens of 16 channels) and mini-resnet's widest ResNet: its
    # first stage's 8x8 map has as many positions as the ViT has patch tokens. They trade cost for
    # accuracy differently (the ViT is cheaper, the ResNet far more accurate), and a ViT block
    # costs less than the ResNet's stem and first block, so offspring can undercut both parents.
    return Family(
        name="mini-vit-resnet",
        description="A small ViT and a small ResNet for the embedded cluttered-digits task, recombined",
        anchors=(replace(mini_vit("mini_tiny", 16, 12), adapter=ViTAdapter()),
                 replace(mini_resnet("resnet_c16", 16), adapter=ResNetAdapter())),
        adapter=ViTAdapter(),
        input_size=(1, 32, 32),
        num_classes=10,
        task=DIGITS,
        stitch_stages=None,
        recombine=True,
    )


def resnet50_resnext50() -> Family:
    # timm's ResNet-50 and ResNeXt-50 (32x4d): the same stages and widths (256 to 2048 channels at
    # 56x56 to 7x7), bottlenecks of plain against grouped convolutions, so every block of a stage
    # can be matched with its namesake's.
    return Family(
        name="resnet50-resnext50",
        description="timm's ResNet-50 and ResNeXt-50 32x4d on ImageNet-1k (224 px), recombined",
        anchors=(AnchorSpec("resnet50", "resnet50", adapter=ResNetAdapter()),
                 AnchorSpec("resnext50_32x4d", "resnext50_32x4d", adapter=ResNetAdapter())),
        adapter=ResNetAdapter(),
        input_size=(3, 224, 224),
        num_classes=1000,
        task=IMAGENET,
        stitch_stages=None,
        recombine=True,
    )
