"""Stitching for neuroevolution: matching two parents' points, and the supernetwork's offspring.

The oracles are independent of the code under test: the merged network's block graph for cycles,
brute force for the best matchings, the parents' own timm forward passes, a direct evaluation of
the supernetwork's switches block by block, and full fvcore traces for costs.
"""
import itertools
import random
from functools import cache

import pytest
import torch
from torch import nn

from snnet.cost import trace_config_macs
from snnet.errors import SnnetError
from snnet.evolve import Supernet, linear_cka, match, match_parents
from snnet.evolve.matching import CYCLE, ENDS, LOWER, SHAPE, candidates
from snnet.families import Activation, AnchorSpec, Family
from snnet.families.recombined import mini_vit_resnet
from snnet.model import StitchableNet
from snnet.space import build_two_way_space
from snnet.stitching import least_squares_init
from snnet.tasks import DIGITS

# --- matching ---------------------------------------------------------------------------------

SHAPES = [  # ViT-like tokens (a class token first) and CNN-like maps, of 4 or 9 positions
    Activation("tokens", 3, (4,), prefix_tokens=1), Activation("map", 5, (2, 2)),
    Activation("tokens", 3, (9,), prefix_tokens=1), Activation("map", 5, (3, 3)), None,
]


def _acyclic(pairs, depth_a, depth_b) -> bool:
    """The merged network's blocks with stitches both ways at every pair: A's block i - 1 feeds B's
    block j, B's block j - 1 feeds A's block i. Kahn's algorithm: acyclic iff every block is sorted."""
    edges = [(("A", b), ("A", b + 1)) for b in range(depth_a - 1)] + [(("B", b), ("B", b + 1)) for b in range(depth_b - 1)]
    for i, j in pairs:
        edges += [(("A", i - 1), ("B", j)), (("B", j - 1), ("A", i))]
    nodes = {("A", b) for b in range(depth_a)} | {("B", b) for b in range(depth_b)}
    indegree = {node: 0 for node in nodes}
    for _, target in edges:
        indegree[target] += 1
    ready, sorted_count = [n for n in nodes if indegree[n] == 0], 0
    while ready:
        node = ready.pop()
        sorted_count += 1
        for source, target in edges:
            if source == node:
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
    return sorted_count == len(nodes)


def _matchings(pairs):
    """Every set of pairs that uses each point at most once."""
    if not pairs:
        yield ()
        return
    first, rest = pairs[0], pairs[1:]
    yield from _matchings(rest)
    for tail in _matchings([p for p in rest if p[0] != first[0] and p[1] != first[1]]):
        yield (first,) + tail


def test_matching_never_yields_a_cycle_and_keeps_the_heaviest_consistent_set():
    rng = random.Random(0)
    for trial in range(150):
        points_a = [rng.choice(SHAPES) for _ in range(rng.randint(2, 7))]
        points_b = [rng.choice(SHAPES) for _ in range(rng.randint(2, 7))]
        # the candidates, by the rule stated independently: inner points of as many image positions
        expected = {(i, j) for i, a in enumerate(points_a) for j, b in enumerate(points_b)
                    if 0 < i < len(points_a) - 1 and 0 < j < len(points_b) - 1 and a is not None and b is not None
                    and a.spatial_positions == b.spatial_positions}
        # coarse weights make ties, which must not break anything
        weights = {pair: rng.choice([0.1, 0.5, 1.0, rng.random()]) for pair in expected}
        result = match(points_a, points_b, weights if trial % 3 else None)
        weights = result.weights
        assert set(weights) == expected
        assert set(result.rejected) | set(result.pairs) == set(itertools.product(range(len(points_a)), range(len(points_b))))
        assert not set(result.rejected) & set(result.pairs)
        # monotone, and (the independent test) the merged network has no cycle
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(result.pairs, result.pairs[1:]))
        assert _acyclic(result.pairs, len(points_a) - 1, len(points_b) - 1)
        # the assignment step found a maximum-weight matching ...
        assigned = list(result.pairs) + [p for p, why in result.rejected.items() if why == CYCLE]
        assert len({i for i, _ in assigned}) == len({j for _, j in assigned}) == len(assigned)
        best = max(sum(weights[p] for p in m) for m in _matchings(sorted(expected)))
        assert sum(weights[p] for p in assigned) == pytest.approx(best)
        # ... and no acyclic subset of it is heavier than what was kept
        heaviest = max(sum(weights[p] for p in subset) for r in range(len(assigned) + 1)
                       for subset in itertools.combinations(assigned, r) if _acyclic(subset, len(points_a) - 1,
                                                                                     len(points_b) - 1))
        assert result.weight == pytest.approx(heaviest)
        assert sum(result.reasons().values()) == len(result.rejected)


def test_a_crossing_pair_is_cut_for_the_heavier_one():
    points = [Activation("map", 5, (2, 2))] * 5
    result = match(points, points, {(i, j): 0.0 for i in range(1, 4) for j in range(1, 4)}
                   | {(1, 3): 1.0, (3, 1): 3.0, (2, 2): 0.5})
    assert result.pairs == ((3, 1),)
    assert result.rejected[(1, 3)] == CYCLE and result.rejected[(2, 2)] == CYCLE


def test_linear_cka_is_one_for_a_rotated_scaled_copy_and_small_for_noise():
    torch.manual_seed(0)
    x = torch.randn(2000, 4, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    assert linear_cka(x, 3 * x @ rotation + 1) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(2000, 6, dtype=torch.float64)) < 0.02
    y = x[:, :2] + 0.5 * torch.randn(2000, 2, dtype=torch.float64)
    assert 0.1 < linear_cka(x, y) < 0.9


@pytest.fixture(scope="module")
def parents():
    torch.manual_seed(3)
    family = mini_vit_resnet()
    anchors = [family.build_anchor(i) for i in range(2)]
    with torch.no_grad():  # non-trivial values everywhere (timm starts some heads and scales near zero)
        for p in (p for anchor in anchors for p in anchor.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    return family, anchors


def test_the_vit_and_resnet_meet_only_where_patch_tokens_and_pixels_agree(parents):
    family, anchors = parents
    net = StitchableNet(family, anchors, family.space()).eval()
    assert len(net.space) == 2 and net.space.num_layers == 0
    found, rejected = candidates(net.points[0], net.points[1])
    # 64 patch tokens (the class token aside) against the ResNet's 8x8 first stage: its points 1-3
    assert found == [(i, j) for i in range(1, 12) for j in range(1, 4)]
    structural = match_parents(net)
    assert structural.reasons() == {ENDS: 13 * 17 - 11 * 15, SHAPE: 11 * 12, LOWER: 33 - 3}
    by_cka = match_parents(net, [torch.randn(8, *family.input_size) for _ in range(2)])
    assert len(by_cka.pairs) in (1, 2, 3) and all(0 <= w <= 1 for w in by_cka.weights.values())
    assert set(by_cka.pairs) <= set(found)


# --- the supernetwork ---------------------------------------------------------------------------

PAIRS = ((3, 1), (6, 2), (9, 3))  # the ViT's points 3, 6, 9 with the ResNet's first-stage points


@pytest.fixture(scope="module")
def supernet(parents):
    family, anchors = parents
    net = Supernet(family, anchors, PAIRS).eval()
    least_squares_init(net, [torch.randn(16, *family.input_size)])
    return net


def test_stitching_layers_go_both_ways_and_make_or_drop_the_class_token(supernet):
    assert supernet.space.layer_pairs == ((0, 1), (1, 0)) * 3
    into_resnet, into_vit = supernet.stitch_layers[0], supernet.stitch_layers[1]
    assert type(into_resnet).__name__ == "TokensToMap" and into_resnet.drop_tokens == 1
    width = supernet.anchors[0].embed_dim  # the ViT's tokens; the ResNet's first stage has 16 channels
    assert type(into_vit).__name__ == "MapToTokens" and into_vit.prefix.shape == (1, width)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert into_resnet(torch.randn(2, 65, width)).shape == (2, 16, 8, 8)
        assert into_vit(torch.randn(2, 16, 8, 8)).shape == (2, 65, width)
        assert supernet.forward_genotype(x, (1, 0, 0, 0, 0, 0, 1)).shape == (2, 10)


def test_the_parents_and_their_ensemble_are_reproduced_exactly(supernet):
    x = torch.randn(3, 1, 32, 32)
    vit, resnet = supernet.anchors
    with torch.no_grad():
        assert torch.equal(supernet.forward_genotype(x, (0,) * 6 + (0,)), vit(x))
        assert torch.equal(supernet.forward_genotype(x, (0,) * 6 + (1,)), resnet(x))
        assert torch.equal(supernet.forward_genotype(x, (0,) * 6 + (2,)), (vit(x) + resnet(x)) / 2)
    assert supernet.offspring((0,) * 6 + (2,)) == (0, 1)


def _direct(net, genotype, x):
    """The supernetwork evaluated straight from its switches: a block's input is its own parent's
    previous output or, where the switch of the layer entering it is on, that layer applied to the
    other parent's output at the matched point. Memoised, so shared parts run once."""
    entering = {}  # (parent, block) -> (layer, the other parent's point)
    for k, (i, j) in enumerate(net.genome.pairs):
        entering[(1, j)] = (2 * k, (0, i))
        entering[(0, i)] = (2 * k + 1, (1, j))

    @cache
    def output(parent, p):  # what the parent's own block p - 1 gives (p = 0: its embedding)
        if p == 0:
            return net.adapters[parent].embed(net.anchors[parent], x)
        return net.blocks[parent][p - 1](block_input(parent, p - 1))

    def block_input(parent, p):
        layer, source = entering.get((parent, p), (None, None))
        return net.stitch_layers[layer](output(*source)) if layer is not None and genotype[layer] else output(parent, p)

    def logits(parent):
        return net.adapters[parent].head(net.anchors[parent], output(parent, len(net.blocks[parent])))

    return torch.stack([logits(0), logits(1)]).mean(0) if genotype[-1] == 2 else logits(genotype[-1])


def test_every_genotype_runs_its_switches_and_the_key_tells_paths_apart(supernet):
    x = torch.randn(2, 1, 32, 32)
    by_key = {}
    with torch.no_grad():
        for genes in itertools.product((0, 1), repeat=6):
            for output in range(3):
                genotype = genes + (output,)
                out = supernet.forward_genotype(x, genotype)
                assert torch.equal(out, _direct(supernet, genotype, x))
                by_key.setdefault(supernet.active_key(genotype), []).append((genotype, out))
    # genotypes that differ only in switches a key leaves out run the same network ...
    for key, group in by_key.items():
        assert all(torch.equal(out, group[0][1]) for _, out in group)
        assert supernet.genome.active_key(key) == key and supernet.offspring(key) == supernet.offspring(group[0][0])
    # ... and different keys run different networks
    outputs = [group[0][1] for group in by_key.values()]
    assert all(not torch.allclose(a, b) for a, b in itertools.combinations(outputs, 2))
    # from A's head the trace reads only the layers entering A; from B's, those entering B
    assert supernet.genome.active_key((1, 0, 1, 0, 1, 0, 0)) == (0,) * 7
    assert supernet.genome.active_key((0, 1, 0, 1, 0, 1, 1)) == (0,) * 6 + (1,)
    # a single path reads one switch per pair, each of which changes it: 2^3 paths end at each head
    assert [sum(key[-1] == output for key in by_key) for output in (0, 1)] == [8, 8]


def _check_cost(net, genotype):
    cost = net.offspring_cost(genotype)
    ids = net.offspring(genotype)
    assert trace_config_macs(net, ids[0] if len(ids) == 1 else ids) == cost.macs
    net.zero_grad()
    net.forward_genotype(torch.randn(1, 1, 32, 32), genotype).sum().backward()
    assert sum(p.numel() for p in net.parameters() if p.grad is not None) == cost.params
    return cost


def test_offspring_cost_exactly_what_fvcore_traces(supernet):
    # ViT blocks 0-2, into the ResNet at its block 1 (class token dropped), back into the ViT at
    # block 9 (class token made): two switches, the output A
    two = (1, 0, 0, 0, 0, 1, 0)
    ids = supernet.offspring(two)
    assert len(ids) == 1 and [(s.anchor, s.first_block, s.last_block) for s in supernet.space[ids[0]].segments] \
        == [(0, 0, 2), (1, 1, 2), (0, 9, 11)]
    cost = _check_cost(supernet, two)
    # the same switches with both heads: B's head reads layer 0 too, so both paths run ViT blocks
    # 0-2, layer 0 and ResNet blocks 1-2, once, before one returns to the ViT and one stays
    shared = (1, 0, 0, 0, 0, 1, 2)
    assert [supernet.space[i].front for i in supernet.offspring(shared)] == [0, 0]
    ensemble = _check_cost(supernet, shared)
    alone = supernet.offspring_cost((1, 0, 0, 0, 0, 0, 1))
    assert cost.macs < ensemble.macs < cost.macs + alone.macs  # the shared prefix counts once
    supernet.zero_grad()


def test_bad_genotypes_and_pairs_are_one_clear_line(supernet, parents):
    for genotype, message in [((0,) * 6, "has 7 genes"), ((2,) + (0,) * 6, "switches are 0"),
                              ((0,) * 6 + (3,), "output switch is 0"), ((0.5,) + (0,) * 6, "integers")]:
        with pytest.raises(SnnetError, match=message):
            supernet.offspring(genotype)
    family, anchors = parents
    with pytest.raises(SnnetError, match="must increase in both parents"):
        Supernet(family, anchors, ((3, 2), (6, 1)))
    with pytest.raises(SnnetError, match="must lie between blocks"):
        build_two_way_space(["a", "b"], [12, 16], [(0, 1)])


# --- least squares through prefix tokens ------------------------------------------------------------

class _Fixed(nn.Module):
    """A toy anchor: a fixed function of the input, then two blocks that do nothing."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.blocks = nn.ModuleList([nn.Identity(), nn.Identity()])


class _FixedAdapter:
    def __init__(self, point: Activation):
        self.point = point

    def embed(self, model, x):
        return model.fn(x)

    def blocks(self, model):
        return model.blocks

    def points(self, model, input_size):
        return [self.point] * 3

    def head(self, model, x, final_norm=True):
        return x.flatten(1)


def test_least_squares_recovers_a_permuted_copy_through_a_class_token():
    torch.manual_seed(0)
    pixels = Activation("map", 6, (4, 4))
    tokens = Activation("tokens", 9, (16,), prefix_tokens=1)
    # B's tokens: a known class token, then per pixel A's channels and three affine copies, shuffled
    perm = torch.randperm(9)
    class_token = torch.linspace(-1, 2, 9, dtype=torch.float64)

    def as_tokens(x):
        t = x.flatten(2).transpose(1, 2)
        t = torch.cat([t, 2 * t[..., :3] - 1], dim=-1)[..., perm]
        return torch.cat([class_token.expand(x.shape[0], 1, 9), t], dim=1)

    family = Family("toy", "", (AnchorSpec("cnn", "-", adapter=_FixedAdapter(pixels)),
                                AnchorSpec("vit", "-", adapter=_FixedAdapter(tokens))),
                    _FixedAdapter(pixels), (6, 4, 4), 10, DIGITS)
    space = build_two_way_space(["cnn", "vit"], [2, 2], [(1, 1)])
    net = StitchableNet(family, [_Fixed(lambda x: x), _Fixed(as_tokens)], space).double()
    residuals = least_squares_init(net, [torch.randn(5, 6, 4, 4, dtype=torch.float64) for _ in range(2)])
    assert max(residuals.values()) < 1e-9
    into_vit, into_cnn = net.stitch_layers
    assert {name for name, _ in into_vit.named_parameters()} == {"weight", "bias", "prefix"}
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(into_vit.prefix[0], class_token, atol=1e-12)
        assert torch.allclose(into_vit(x), as_tokens(x), atol=1e-9)
        assert torch.allclose(into_cnn(as_tokens(x)), x, atol=1e-9)  # the class token is dropped, not fitted
