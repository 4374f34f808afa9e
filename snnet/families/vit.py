"""Plain Vision Transformers (timm's VisionTransformer): DeiT on ImageNet and the embedded mini family."""
import torch
from torch import nn

from snnet.families.registry import AnchorSpec, Family, register_family


class ViTAdapter:
    """Patch embedding and tokens | transformer blocks | final norm, pooling and classifier."""

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = model.patch_embed(x)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        return model.norm_pre(x)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.blocks

    def head(self, model: nn.Module, x: torch.Tensor, final_norm: bool = True) -> torch.Tensor:
        if final_norm:
            x = model.norm(x)
        return model.forward_head(x)

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        modules = [model.norm, model.fc_norm, model.head]
        return modules + ([model.attn_pool] if getattr(model, "attn_pool", None) is not None else [])

    def width(self, model: nn.Module) -> int:
        return model.embed_dim


@register_family("deit")
def deit() -> Family:
    return Family(
        name="deit",
        description="DeiT-Ti/S/B on ImageNet-1k (224 px, patch 16)",
        anchors=tuple(
            AnchorSpec(name, f"{name}_patch16_224", depth=12)
            for name in ("deit_tiny", "deit_small", "deit_base")
        ),
        adapter=ViTAdapter(),
        input_size=(3, 224, 224),
        num_classes=1000,
    )


MINI_WIDTHS = {"mini_tiny": 32, "mini_small": 64, "mini_base": 128}


@register_family("mini")
def mini() -> Family:
    # Widths 1:2:4 and heads 1:2:4 like DeiT-Ti/S/B, scaled down for 32x32 images (patch 4, 65 tokens).
    return Family(
        name="mini",
        description="Three small ViTs for the embedded 32x32 digits task (patch 4, depth 12)",
        anchors=tuple(
            AnchorSpec(
                name,
                "vit_tiny_patch16_224",
                depth=12,
                arch_args=dict(img_size=32, patch_size=4, embed_dim=width, depth=12,
                               num_heads=width // 32, mlp_ratio=4.0),
            )
            for name, width in MINI_WIDTHS.items()
        ),
        adapter=ViTAdapter(),
        input_size=(3, 32, 32),
        num_classes=10,
    )
