"""Plain Vision Transformers (timm's VisionTransformer): DeiT on ImageNet and the embedded mini family."""
import torch
from torch import nn

from snnet.families.registry import Activation, AnchorSpec, Family, register_family
from snnet.tasks import DIGITS, IMAGENET


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

    def stage_depths(self, model: nn.Module) -> tuple[int, ...]:
        return (len(model.blocks),)

    def points(self, model: nn.Module, input_size: tuple[int, int, int]) -> list[Activation]:
        # every block keeps the token count (class/register tokens, then patches) and the width
        tokens = Activation("tokens", model.embed_dim, (model.patch_embed.num_patches,),
                            prefix_tokens=model.num_prefix_tokens)
        return [tokens] * (len(model.blocks) + 1)


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
        task=IMAGENET,
    )


def mini_vit(name: str, width: int, depth: int) -> AnchorSpec:
    """A timm ViT for 1x32x32 images (patch 4, 65 tokens), one attention head per 16 channels."""
    return AnchorSpec(
        name,
        "vit_tiny_patch16_224",
        depth=depth,
        arch_args=dict(img_size=32, patch_size=4, in_chans=1, embed_dim=width, depth=depth,
                       num_heads=max(1, width // 16), mlp_ratio=4.0),
    )


@register_family("mini")
def mini() -> Family:
    # Widths and heads 1:2:4 like DeiT-Ti/S/B, sized so the whole default trains on a laptop CPU.
    return Family(
        name="mini",
        description="Three small ViTs for the embedded cluttered-digits task (32x32, patch 4, depth 12)",
        anchors=(mini_vit("mini_tiny", 16, 12), mini_vit("mini_small", 32, 12), mini_vit("mini_base", 64, 12)),
        adapter=ViTAdapter(),
        input_size=(1, 32, 32),
        num_classes=10,
        task=DIGITS,
        # Separately trained baselines of other widths and depths: the paper's comparison.
        zoo=tuple(mini_vit(f"vit_w{w}_d{d}", w, d) for w, d in
                  [(16, 6), (32, 6), (24, 12), (48, 6), (64, 6), (48, 12)]),
    )
