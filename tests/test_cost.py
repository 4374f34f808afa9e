import pytest
import torch

from snnet.cost import anchor_costs, config_cost, space_costs, trace_config_macs
from snnet.families import get_family
from snnet.model import StitchableNet


@pytest.fixture(scope="module")
def deit():
    family = get_family("deit")
    return family, family.space(), space_costs(family, family.space())


def test_deit_anchor_costs_match_the_reference(deit):
    _, _, costs = deit
    assert [round(c.gmacs, 3) for c in costs[:3]] == [1.258, 4.608, 17.583]
    assert [round(c.params_m, 2) for c in costs[:3]] == [5.72, 22.05, 86.57]


def test_deit_stitch_costs_match_the_reference(deit):
    family, space, costs = deit
    assert round(costs[24].gmacs, 3) == 2.759
    # The reference figure 10.048 was measured on the official stitched path, which skips the
    # back anchor's final LayerNorm (0.00076 GMACs); the correct path is within that of it.
    assert costs[56].gmacs == pytest.approx(10.048, abs=1e-3)
    official = config_cost(anchor_costs(family), space[56], final_norm=False)
    assert round(official.gmacs, 3) == 10.048


def test_costs_rise_along_the_space(deit):
    _, space, costs = deit
    # moving the stitch later in a Ti->S pair (more Ti blocks, fewer S blocks) always costs less
    pair = [(c.front_block, costs[c.id].macs) for c in space.configs[3:37] if c.back_block == c.front_block]
    assert [m for _, m in sorted(pair)] == sorted((m for _, m in pair), reverse=True)
    assert costs[0].macs < costs[1].macs < costs[2].macs


@pytest.mark.slow
@pytest.mark.parametrize("stitch_id", [0, 2, 3, 24, 36, 56, 70])
def test_traced_cost_equals_summed_cost(deit, stitch_id):
    family, space, costs = deit
    net = StitchableNet.from_family(family, device="meta").to_empty(device="cpu").eval()
    assert trace_config_macs(net, stitch_id) == costs[stitch_id].macs
    net.final_norm = False
    official = config_cost(anchor_costs(family), space[stitch_id], final_norm=False)
    assert trace_config_macs(net, stitch_id) == official.macs


@pytest.mark.parametrize("stitch_id", [0, 1, 2, 5, 24, 50, 70])
def test_params_are_those_the_forward_pass_uses(mini, stitch_id):
    net = StitchableNet.from_family(mini)
    net(torch.randn(1, *mini.input_size), stitch=stitch_id).sum().backward()
    used = sum(p.numel() for p in net.parameters() if p.grad is not None)
    assert space_costs(mini, net.space)[stitch_id].params == used


def test_anchor_costs_are_traced_once_per_architecture_and_kept_in_the_store(tmp_path, monkeypatch):
    import snnet.cost as cost
    from snnet.store import Store

    family = get_family("mini-resnet")
    store = Store(tmp_path / "store.sqlite")
    monkeypatch.setattr(cost, "_ANCHOR_COSTS", {})
    traced = cost.anchor_costs(family, store)
    # a new process (an empty in-process cache) reads them back and traces nothing
    monkeypatch.setattr(cost, "_ANCHOR_COSTS", {})
    monkeypatch.setattr(cost, "measure_anchors", lambda family: pytest.fail("traced again"))
    assert cost.anchor_costs(family, store) == traced
    # another architecture has another key, and a change of the counting code makes every key new
    assert cost.architecture_key(get_family("mini")) != cost.architecture_key(family)
    key = cost.architecture_key(family)
    monkeypatch.setattr(cost, "COST_VERSION", cost.COST_VERSION + 1)
    assert cost.architecture_key(family) != key
