"""The shipped embedded families: real figures that reproduce, in the shape the paper predicts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pandas as pd

from snnet.api import load_net, shipped_dir
from snnet.evaluate import evaluate_model, evaluate_space
from snnet.weights import load_weights, weights_hash

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = {"mini": (71, 9), "mini-resnet": (23, 8)}  # configurations, networks trained alone


@pytest.fixture(scope="module", params=sorted(EMBEDDED))
def shipped(request):
    return json.loads((shipped_dir(request.param) / "metrics.json").read_text())


def test_shipped_files_are_small_and_match_their_metrics(shipped):
    size = sum(f.stat().st_size for f in (ROOT / "checkpoints").rglob("*") if f.is_file())
    assert size <= 30 * 2**20
    net = load_net(shipped["family"])
    assert weights_hash(net) == shipped["weights"]
    configurations, alone = EMBEDDED[shipped["family"]]
    assert len(shipped["configurations"]) == len(net.space) == configurations and len(shipped["zoo"]) == alone


def test_shipped_figures_reproduce(shipped):
    net = load_net(shipped["family"])
    images, labels = net.family.task.eval_set(net.family, "test")
    ids = [0, 1, 2, 5, len(net.space) - 3]
    measured = evaluate_space(net, images, labels, ids)
    for stitch_id in ids:
        assert measured[stitch_id]["top1"] == pytest.approx(shipped["configurations"][stitch_id]["top1"], abs=1e-9)
    family = net.family
    entry = shipped["zoo"][0]
    spec = family.model_spec(Path(entry["weights"]).stem)
    model = load_weights(family.build_model(spec), shipped_dir(family.name) / entry["weights"])
    assert evaluate_model(model, images, labels)["top1"] == pytest.approx(entry["top1"], abs=1e-9)


def test_anchors_separate_and_accuracy_rises_with_cost(shipped):
    rows = shipped["configurations"]
    anchors = [r["top1"] for r in rows if r["kind"] == "anchor"]
    assert anchors[-1] - anchors[0] >= 6
    assert all(bigger - smaller >= 2 for smaller, bigger in zip(anchors, anchors[1:]))
    ranks = pd.DataFrame(rows)[["gmacs", "top1"]].rank()
    assert ranks["gmacs"].corr(ranks["top1"]) >= 0.6  # Spearman: Pearson of the ranks


def test_stitches_interpolate_between_their_anchors(shipped):
    rows = shipped["configurations"]
    anchor_top1 = {r["front"]: r["top1"] for r in rows if r["kind"] == "anchor"}
    stitches = [r for r in rows if r["kind"] == "stitch"]
    low = lambda r: min(anchor_top1[r["front"]], anchor_top1[r["back"]])
    high = lambda r: max(anchor_top1[r["front"]], anchor_top1[r["back"]])
    inside = [low(r) - 2 <= r["top1"] <= high(r) + 2 for r in stitches]
    assert sum(inside) >= 0.8 * len(stitches)


def test_results_cli_reads_the_shipped_metrics_without_evaluating(tmp_path):
    env = {**os.environ, "SNNET_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "snnet", "results", "--family", "mini", "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    configs = [r for r in rows if r["kind"] != "zoo"]
    zoo = [r for r in rows if r["kind"] == "zoo"]
    assert len(configs) == 71 and len(zoo) >= 9
    assert {"id", "kind", "front", "back", "front_block", "back_block", "layer", "gmacs", "params_m",
            "top1", "top5", "latency_ms"} <= set(configs[0])
    assert {"name", "gmacs", "params_m", "top1"} <= set(zoo[0])
    assert (tmp_path / "store.sqlite").exists()
