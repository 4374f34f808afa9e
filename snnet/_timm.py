"""The one place snnet imports timm; every other module does `from snnet._timm import timm`."""
import glob
import importlib.util
import os
import sys

import torch


def _declare_missing_torchvision_ops() -> None:
    # timm imports torchvision. A torchvision wheel built for CUDA cannot load its compiled ops
    # next to a CPU-only torch, and its pure-Python import then dies on "operator torchvision::nms
    # does not exist". Declaring the op schemas lets the pure-Python parts (all timm needs) import.
    if "torchvision" in sys.modules:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    try:
        for library in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
            torch.ops.load_library(library)
        return
    except (OSError, RuntimeError):
        pass
    library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _declare_missing_torchvision_ops.library = library  # keep the registration alive


_declare_missing_torchvision_ops()

import timm  # noqa: E402

__all__ = ["timm"]
