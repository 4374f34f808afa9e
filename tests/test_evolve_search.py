"""Stitch training by feature matching, and the search over a supernetwork's offspring.

Oracles: the least-squares start's own held-out error, direct uncached evaluations of every
genotype (error from the supernetwork's logits, cost from offspring_cost), and dominance checked
pair by pair.
"""
import itertools
import json

import pytest
import torch

from snnet.errors import SnnetError
from snnet.evolve import Supernet
from snnet.evolve.search import Evaluator, parent_genotypes, search, top1_error
from snnet.evolve.train import (StitchTrainConfig, TaskTrainConfig, feature_mse, layer_points, train_on_task,
                                train_stitches)
from snnet.families.recombined import mini_vit_resnet
from snnet.stitching import least_squares_init

PAIRS = ((3, 1), (6, 2), (9, 3))


@pytest.fixture(scope="module")
def parents():
    torch.manual_seed(3)
    family = mini_vit_resnet()
    anchors = [family.build_anchor(i).eval() for i in range(2)]
    with torch.no_grad():  # non-trivial values everywhere (timm starts some heads and scales near zero)
        for p in (p for anchor in anchors for p in anchor.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    return family, anchors


@pytest.fixture(scope="module")
def supernet(parents):
    family, anchors = parents
    net = Supernet(family, anchors, PAIRS).eval()
    least_squares_init(net, [torch.randn(16, *family.input_size, generator=torch.Generator().manual_seed(1))])
    return net


def _images(seed: int, n: int) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_feature_matching_lowers_the_mse_below_the_least_squares_start(parents):
    family, anchors = parents
    net = Supernet(family, anchors, PAIRS[:1]).eval()
    before = {name: t.clone() for name, t in net.anchors.state_dict().items()}
    # the start is fitted on two images only: the layers' maps fit them, not images in general
    least_squares_init(net, [_images(0, 2)])
    held_out = [_images(99, 64)]
    start = feature_mse(net, held_out)
    summary = train_stitches(net, lambda epoch: _images(1000 + epoch, 256), StitchTrainConfig(steps=40, batch_size=32, lr=3e-3))
    trained = feature_mse(net, held_out)
    assert summary["steps"] == 40 and set(summary["final_loss"]) == set(layer_points(net)) == {0, 1}
    assert all(trained[layer] < start[layer] for layer in start), (start, trained)
    # the parents did not move
    assert all(torch.equal(t, before[name]) for name, t in net.anchors.state_dict().items())


def test_task_training_lowers_every_stitchs_held_out_loss_and_leaves_the_parents(parents):
    family, anchors = parents
    net = Supernet(family, anchors, PAIRS[:1]).eval()
    before = {name: t.clone() for name, t in net.anchors.state_dict().items()}
    least_squares_init(net, [_images(0, 2)])

    def labelled(seed: int, n: int):  # labels the parents' ensemble gives: a task the parents can do
        images = _images(seed, n)
        with torch.no_grad():
            return images, (anchors[0](images) + anchors[1](images)).argmax(1)

    held_out = labelled(99, 96)
    stitches = [config.id for config in net.space if len(config.segments) == 2]

    def losses():
        with torch.no_grad():
            return [float(torch.nn.functional.cross_entropy(net(held_out[0], stitch=i), held_out[1])) for i in stitches]

    start = losses()
    summary = train_on_task(net, lambda epoch: labelled(1000 + epoch, 256),
                            TaskTrainConfig(steps=30, batch_size=32, lr=1e-2, distill=0.5))
    trained = losses()
    assert summary["steps"] == 30 and len(stitches) == 2
    assert all(t < s for s, t in zip(start, trained)), (start, trained)
    assert all(torch.equal(t, before[name]) for name, t in net.anchors.state_dict().items())
    with pytest.raises(SnnetError, match="distill"):
        train_on_task(net, lambda epoch: labelled(0, 64), TaskTrainConfig(steps=1, distill=1.5))


def test_layer_points_join_each_matched_pair_both_ways(supernet):
    assert layer_points(supernet) == {2 * k + d: (((0, i), (1, j)) if d == 0 else ((1, j), (0, i)))
                                      for k, (i, j) in enumerate(PAIRS) for d in (0, 1)}


@pytest.fixture(scope="module")
def eval_set(supernet):
    images = _images(7, 48)
    with torch.no_grad():  # labels the two parents disagree on now and then: errors tell networks apart
        labels = (supernet.anchors[0](images) + 0.5 * supernet.anchors[1](images)).argmax(1)
    return images, labels


def test_the_cache_answers_exactly_what_a_direct_evaluation_would(supernet, eval_set):
    images, labels = eval_set
    evaluator = Evaluator(supernet, images, labels, batch_size=20)
    genotypes = [genes + (output,) for genes in itertools.product((0, 1), repeat=6) for output in range(3)]
    for genotype in genotypes:
        found = evaluator(genotype)
        assert found.error == top1_error(supernet, genotype, images, labels)
        assert found.gmacs == supernet.offspring_cost(genotype).gmacs
        assert found.genotype == supernet.active_key(genotype)
    keys = {supernet.active_key(g) for g in genotypes}
    assert evaluator.requests == len(genotypes)
    assert evaluator.evaluations == len(keys) - 3  # the parents and the ensemble were evaluated up front
    assert evaluator.skipped_inactive == len(genotypes) - len(keys) + 3
    # a change of an inactive switch alone is skipped; a change of an active one is not
    evaluator = Evaluator(supernet, images, labels)
    # B's head reads layers 4, 2, 0 (those entering B) while its trace stays in B, which layer 0 leaves
    # only for A's first blocks: layers 1, 3, 5 (entering A) are read by nobody
    evaluator((1, 0, 0, 0, 0, 0, 1))
    evaluator((1, 1, 0, 1, 0, 1, 1))
    assert (evaluator.evaluations, evaluator.skipped_inactive) == (1, 1)
    evaluator((1, 0, 0, 0, 1, 0, 1))
    assert (evaluator.evaluations, evaluator.skipped_inactive) == (2, 1)


def _dominates(a, b) -> bool:
    return a["error"] <= b["error"] and a["gmacs"] <= b["gmacs"] and (a["error"] < b["error"] or a["gmacs"] < b["gmacs"])


@pytest.mark.parametrize("algorithm", ["nsga2", "random"])
def test_the_front_is_non_dominated_and_each_entry_is_what_its_genotype_measures(supernet, eval_set, algorithm):
    images, labels = eval_set
    test_set = (_images(8, 24), labels[:24])
    result = search(supernet, images, labels, budget=30, seed=0, algorithm=algorithm, test_set=test_set)
    front = result["front"]
    assert result["requests"] == 30 and result["evaluations"] + result["skipped_inactive"] == 30
    assert front and not any(_dominates(a, b) for a, b in itertools.permutations(front, 2))
    parents = {tuple(g) for g in parent_genotypes(supernet).values()}
    for entry, tested in zip(front, result["test_front"]):
        genotype = tuple(entry["genotype"])
        assert entry["is_parent"] == (genotype in parents)
        assert entry["error"] == top1_error(supernet, genotype, images, labels)
        assert entry["gmacs"] == supernet.offspring_cost(genotype).gmacs
        assert tested["genotype"] == entry["genotype"] and tested["error"] == top1_error(supernet, genotype, *test_set)
    # the parents and their ensemble are on the front unless something evaluated dominates them
    by_output = {name: g for name, g in parent_genotypes(supernet).items()}
    a = {"error": result["parents"][0]["error"], "gmacs": result["parents"][0]["gmacs"]}
    assert a["gmacs"] == supernet.offspring_cost(by_output["A"]).gmacs
    assert any(_dominates(e, a) for e in front) or list(by_output["A"]) in [e["genotype"] for e in front]
    # highlights, brute force against the two parents as measured
    two = [{"error": p["error"], "gmacs": p["gmacs"]} for p in result["parents"]]
    offspring = [e for e in front if not e["is_parent"]]
    assert result["dominates_parent"] == [e["genotype"] for e in offspring if any(_dominates(e, p) for p in two)]
    assert result["no_parent_dominates"] == [e["genotype"] for e in offspring if not any(_dominates(p, e) for p in two)]


@pytest.mark.slow
def test_the_evolve_command_answers_in_json(tmp_path, monkeypatch, capsys):
    from snnet.cli import main

    monkeypatch.setenv("SNNET_HOME", str(tmp_path))
    assert main(["evolve", "--preset", "mini", "--evaluations", "20", "--seed", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"parents", "ensemble", "front", "evaluations", "skipped_inactive", "matching", "test_front"} <= set(result)
    assert [p["name"] for p in result["parents"]] == ["mini_tiny", "resnet_c16"]
    assert set(result["ensemble"]) == {"error", "gmacs"}
    assert all(set(e) == {"genotype", "error", "gmacs", "is_parent"} for e in result["front"])
    assert result["matching"]["pairs"] and sum(result["matching"]["rejected"].values()) > 0
    assert len(result["test_front"]) == len(result["front"])
    assert result["evaluations"] + result["skipped_inactive"] == 20


def test_a_fresh_machine_finds_the_presets_trained_layers_in_the_checkpoints(tmp_path, monkeypatch):
    from snnet.api import shipped_dir
    from snnet.evolve.presets import LAYERS_FILE, prepare
    from snnet.weights import read_weights

    monkeypatch.setenv("SNNET_HOME", str(tmp_path))  # nothing cached here
    net, info, _ = prepare("mini", quiet=True)
    shipped = list((shipped_dir("evolve")).glob(f"mini-*/{LAYERS_FILE}"))
    assert [str(path) for path in shipped] == [info["training"]["weights"]]
    assert info["training"]["task_steps"] == TaskTrainConfig().steps
    stored = read_weights(shipped[0])
    assert all(torch.equal(stored[name], t) for name, t in net.stitch_layers.state_dict().items())
    assert not any((tmp_path / "evolve").glob("*"))  # nothing was trained
