"""Model families: anchors of one domain and the adapters that split them into stages."""
from snnet.families.registry import (Activation, Adapter, AnchorSpec, Family, family_names, get_family,
                                     register_family)
from snnet.families import levit, resnet, swin, vit  # noqa: F401  (register their families)

__all__ = ["Activation", "Adapter", "AnchorSpec", "Family", "family_names", "get_family", "register_family"]
