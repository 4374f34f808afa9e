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
# the share of stitches within 2 points of their anchors' range, as measured (README): mini's
# anchors no longer fall, and its stitches from mini_tiny with late stitch points lie below mini_tiny
WITHIN_2 = {"mini": 0.7, "mini-resnet": 0.9}


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
    assert sum(inside) >= WITHIN_2[shipped["family"]] * len(stitches)


def test_anchors_keep_their_accuracy_through_snnet_training(shipped):
    """SN-Net's claim: one network, its anchors as good as trained alone (they lose at most a point)."""
    from snnet.default import standing

    assert all(a["change"] >= -1.0 for a in standing(shipped)["anchors"].values())


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


def test_standing_compares_stitches_with_their_anchors_and_every_baseline():
    from snnet.default import standing

    anchor = lambda i, name, gmacs, top1: {"id": i, "kind": "anchor", "front": name, "back": name, "gmacs": gmacs, "top1": top1}
    stitch = lambda i, gmacs, top1: {"id": i, "kind": "stitch", "front": "a", "back": "b", "gmacs": gmacs, "top1": top1}
    zoo = lambda name, width, depth, gmacs, top1: {"name": name, "width": width, "depth": depth, "gmacs": gmacs, "top1": top1}
    summary = {"configurations": [anchor(0, "a", 1.0, 60.0), anchor(1, "b", 4.0, 80.0), stitch(2, 2.0, 70.0),
                                  stitch(3, 3.0, 57.0), stitch(4, 3.5, 82.0)],
               "zoo": [zoo("a (alone)", 16, 12, 1.0, 61.0), zoo("b (alone)", 64, 12, 4.0, 79.5),
                       zoo("mid", 32, 12, 3.2, 75.0), zoo("shallow", 32, 6, 2.5, 72.0), zoo("cheap", 8, 12, 0.5, 40.0)]}
    found = standing(summary)
    assert found["anchors"] == {"a": {"alone": 61.0, "snnet": 60.0, "change": -1.0},
                                "b": {"alone": 79.5, "snnet": 80.0, "change": 0.5}}
    assert found["stitches_within_2"] == pytest.approx(2 / 3)  # 57 lies 3 below a: out; 82 lies 2 above b: in
    by_name = {b["name"]: b for b in found["baselines"]}
    assert set(by_name) == {"mid", "shallow", "cheap"}
    assert by_name["mid"]["own_design"] and not by_name["shallow"]["own_design"] and not by_name["cheap"]["own_design"]
    assert (by_name["mid"]["best_id"], by_name["mid"]["gap"]) == (2, -5.0)  # best at 3.2 GMACs or less: 70
    assert (by_name["shallow"]["best_id"], by_name["shallow"]["gap"]) == (2, -2.0)
    assert by_name["cheap"]["best_id"] is None and by_name["cheap"]["gap"] is None


def test_a_rebuild_of_snnet_alone_reuses_the_shipped_networks_of_the_same_recipe(tmp_path):
    from dataclasses import replace

    from snnet.default import RECIPE, _finished, reuse_shipped
    from snnet.families import get_family

    family = get_family("mini")
    runs = {spec.name: tmp_path / "alone" / spec.name for spec in family.anchors + family.zoo}
    assert reuse_shipped("mini", runs, replace(RECIPE, steps=RECIPE.steps + 1)) == []  # another recipe
    assert not (tmp_path / "alone").exists()
    assert reuse_shipped("mini", runs, RECIPE) == list(runs)
    shipped = json.loads((shipped_dir("mini") / "metrics.json").read_text())
    for name, run in runs.items():
        assert _finished(run, RECIPE)
        assert (run / "model.safetensors").read_bytes() == (shipped_dir("mini") / "zoo" / f"{name}.safetensors").read_bytes()
        assert json.loads((run / "train.json").read_text())["train_s"] == shipped["train_seconds"][name]
    assert reuse_shipped("mini", runs, RECIPE) == []  # finished runs stay as they are
