"""The timm model zoo beside the stitches: published ImageNet-1k figures of separately trained networks.

The curated table holds figures only, taken from timm's published results (pytorch-image-models,
results/results-imagenet.csv: top-1/top-5 on the 50k validation images, parameters) and inference
benchmark (results/benchmark-infer-amp-nchw-pt291-cu128-4090.csv: GMACs per image, fvcore,
batch 1), both at commit aa4b5850c1543fa488abf260f18390eda46cf85d, Apache-2.0. One pretrained tag
per architecture, trained on ImageNet-1k alone where timm has one, at its native resolution, so the
comparison with DeiT-based SN-Net is like for like. `timm_zoo(path)` reads the full results CSV
instead (and the benchmark CSV beside it for GMACs); `fetch_results` downloads both when online.
"""
import csv
import urllib.request
from pathlib import Path
from typing import Optional

from snnet.errors import SnnetError

RESULTS_URL = "https://raw.githubusercontent.com/huggingface/pytorch-image-models/main/results/"
RESULTS_FILE = "results-imagenet.csv"
BENCHMARK_FILE = "benchmark-infer-amp-nchw-pt291-cu128-4090.csv"
SOURCE = "timm results-imagenet.csv and benchmark-infer-amp-nchw-pt291-cu128-4090.csv (pytorch-image-models)"

# (timm model with pretrained tag, eval image size, top-1 %, top-5 %, GMACs, params in millions)
CURATED = (
    ("deit_tiny_patch16_224.fb_in1k", 224, 72.190, 91.100, 1.26, 5.72),
    ("deit_small_patch16_224.fb_in1k", 224, 79.856, 95.056, 4.61, 22.05),
    ("deit_base_patch16_224.fb_in1k", 224, 81.980, 95.740, 17.58, 86.57),
    ("swin_tiny_patch4_window7_224.ms_in1k", 224, 81.388, 95.540, 4.51, 28.29),
    ("swin_small_patch4_window7_224.ms_in1k", 224, 83.228, 96.326, 8.77, 49.61),
    ("swin_base_patch4_window7_224.ms_in1k", 224, 83.604, 96.450, 15.47, 87.77),
    ("resnet18.tv_in1k", 224, 69.752, 89.082, 1.82, 11.69),
    ("resnet34.tv_in1k", 224, 73.298, 91.422, 3.67, 21.80),
    ("resnet50.tv_in1k", 224, 76.156, 92.866, 4.11, 25.56),
    ("resnet101.tv_in1k", 224, 77.404, 93.552, 7.83, 44.55),
    ("resnet152.tv_in1k", 224, 78.330, 94.046, 11.56, 60.19),
    ("levit_128s.fb_dist_in1k", 224, 76.520, 92.870, 0.30, 7.78),
    ("levit_128.fb_dist_in1k", 224, 78.486, 93.998, 0.41, 9.21),
    ("levit_192.fb_dist_in1k", 224, 79.858, 94.808, 0.66, 10.95),
    ("levit_256.fb_dist_in1k", 224, 81.506, 95.466, 1.13, 18.89),
    ("levit_384.fb_dist_in1k", 224, 82.600, 96.020, 2.35, 39.13),
    ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", 224, 75.452, 92.858, 1.26, 5.72),
    ("vit_small_patch16_224.augreg_in1k", 224, 78.842, 94.280, 4.61, 22.05),
    ("vit_base_patch16_224.augreg_in1k", 224, 79.154, 94.108, 17.58, 86.57),
    ("convnext_atto.d2_in1k", 224, 75.672, 92.914, 0.55, 3.70),
    ("convnext_femto.d1_in1k", 224, 77.498, 93.678, 0.79, 5.22),
    ("convnext_pico.d1_in1k", 224, 79.516, 94.554, 1.37, 9.05),
    ("convnext_nano.d1h_in1k", 224, 80.762, 95.332, 2.46, 15.59),
    ("convnext_tiny.fb_in1k", 224, 82.066, 95.854, 4.47, 28.59),
    ("convnext_small.fb_in1k", 224, 83.144, 96.432, 8.71, 50.22),
    ("convnext_base.fb_in1k", 224, 83.838, 96.746, 15.38, 88.59),
    ("efficientnet_b0.ra_in1k", 224, 77.698, 93.538, 0.40, 5.29),
    ("efficientnet_b1.ft_in1k", 224, 77.592, 93.636, 0.59, 7.79),
    ("efficientnet_b2.ra_in1k", 256, 79.324, 94.582, 0.89, 9.11),
    ("efficientnet_b3.ra2_in1k", 288, 81.472, 95.696, 1.63, 12.23),
    ("regnetx_004.pycls_in1k", 224, 72.482, 90.840, 0.40, 5.16),
    ("regnetx_008.pycls_in1k", 224, 75.054, 92.338, 0.81, 7.26),
    ("regnetx_016.pycls_in1k", 224, 76.936, 93.432, 1.62, 9.19),
    ("regnetx_032.pycls_in1k", 224, 78.160, 94.088, 3.20, 15.30),
    ("regnety_004.pycls_in1k", 224, 74.004, 91.756, 0.41, 4.34),
    ("regnety_008.pycls_in1k", 224, 76.334, 93.060, 0.81, 6.26),
    ("regnety_016.pycls_in1k", 224, 77.880, 93.726, 1.63, 11.20),
    ("regnety_032.pycls_in1k", 224, 78.902, 94.426, 3.20, 19.44),
    ("regnety_040.pycls_in1k", 224, 79.246, 94.666, 4.00, 20.65),
    ("regnety_064.pycls_in1k", 224, 79.734, 94.768, 6.39, 30.58),
    ("regnety_080.pycls_in1k", 224, 79.874, 94.834, 8.00, 39.18),
    ("regnety_160.pycls_in1k", 224, 80.284, 94.982, 15.96, 83.59),
    ("mobilenetv2_100.ra_in1k", 224, 72.910, 91.000, 0.31, 3.50),
    ("mobilenetv2_140.ra_in1k", 224, 76.528, 93.008, 0.60, 6.11),
    ("mobilenetv3_small_100.lamb_in1k", 224, 67.636, 87.638, 0.06, 2.54),
    ("mobilenetv3_large_100.ra_in1k", 224, 75.784, 92.528, 0.23, 5.48),
)


def _row(model: str, img_size: int, top1: float, top5: Optional[float], gmacs: Optional[float],
         params_m: Optional[float], source: str) -> dict:
    """One zoo row, the shape the store's zoo table has; figures are published, not measured here."""
    name = model if img_size == 224 else f"{model} @{img_size}px"
    return {"name": name, "weights": None, "gmacs": gmacs, "params_m": params_m, "top1": top1, "top5": top5,
            "latency_ms": None, "source": source}


def _number(text: Optional[str]) -> Optional[float]:
    try:
        return float(text.replace(",", ""))  # large counts are written with thousands separators
    except (AttributeError, ValueError):
        return None


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as error:
        raise SnnetError(f"cannot read {path}: {error.strerror or error}") from None


def timm_zoo(path: Optional[Path] = None) -> list[dict]:
    """Zoo rows, cheapest first: the curated table, or every row of a timm results CSV at `path`.

    GMACs of a CSV's rows come from a timm benchmark CSV (benchmark-infer-*.csv) in the same folder,
    joined on (architecture, image size); rows it does not cover have gmacs None.
    """
    if path is None:
        rows = [_row(*entry, source=SOURCE) for entry in CURATED]
    else:
        path = Path(path)
        results = _read_csv(path)
        if not results or not {"model", "img_size", "top1", "param_count"} <= set(results[0]):
            raise SnnetError(f"{path} is not a timm results CSV (columns model, img_size, top1, top5, param_count)")
        gmacs = {}
        for benchmark in sorted(path.parent.glob("benchmark-infer-*.csv")):
            for entry in _read_csv(benchmark):
                gmacs.setdefault((entry.get("model"), entry.get("infer_img_size")), _number(entry.get("infer_gmacs")))
        source = f"timm {path.name}" + (" with benchmark GMACs" if gmacs else "")
        rows = [_row(r["model"], int(r["img_size"]), float(r["top1"]), _number(r.get("top5")),
                     gmacs.get((r["model"].split(".")[0], r["img_size"])), _number(r["param_count"]), source)
                for r in results if _number(r["img_size"]) is not None and _number(r["top1"]) is not None]
    return sorted(rows, key=lambda row: (row["gmacs"] is None, row["gmacs"] or 0.0, row["name"]))


def fetch_results(folder: Path, timeout_s: float = 30.0) -> Path:
    """Download timm's results and benchmark CSVs into `folder`; returns the results CSV's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (RESULTS_FILE, BENCHMARK_FILE):
        try:
            with urllib.request.urlopen(RESULTS_URL + name, timeout=timeout_s) as response:
                (folder / name).write_bytes(response.read())
        except OSError as error:
            raise SnnetError(f"cannot download {RESULTS_URL + name} ({getattr(error, 'reason', error)}): "
                             f"fetch it by hand and give its path") from None
    return folder / RESULTS_FILE
