"""Model families: anchors of one domain and the adapters that split them into stages."""
from snnet.families.registry import Adapter, AnchorSpec, Family, family_names, get_family, register_family
from snnet.families import vit  # noqa: F401  (registers deit and mini)

__all__ = ["Adapter", "AnchorSpec", "Family", "family_names", "get_family", "register_family"]
