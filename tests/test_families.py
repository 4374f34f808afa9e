"""Every family: anchors that are their timm models, the reference spaces and their costs, and
stitching layers of every kind.

The reference figures are the per-configuration "flops" the SN-Net reference code (ziplab/SN-Net)
published with its results: stitching_swin/results/stitches_res.txt,
stitching_resnet_swin/results/stitches_res_resnet_18_50.txt and ..._resnet_18_swin_ti.txt,
stitching_levit/results/stitches_res.txt. Its evaluation counted them with fvcore's
FlopCountAnalysis on one 3x224x224 image (one multiply-add = 1), as snnet.cost does; the ids are
its configuration ids.
"""
import pytest
import torch

from snnet.cost import space_costs, trace_config_macs
from snnet.families import Activation, get_family
from snnet.model import StitchableNet
from snnet.space import Segment
from snnet.stitching import least_squares_init, load_solution, make_stitching_layer, rows

REFERENCE_GMACS = {
    "swin": [4509194496, 8768534784, 15467826176, 8797436160, 15220458496, 8797436160, 14619249664, 8797436160,
             8442491136, 8442491136, 8087546112, 7732601088, 7732601088, 7377656064, 7022711040, 7022711040,
             6667766016, 6312820992, 6312820992, 5957875968, 5602930944, 5602930944, 5247985920, 4893040896,
             14026420224, 13753964544, 13481508864, 13209053184, 12936597504, 12664141824, 12391686144,
             12119230464, 11846774784, 11574319104, 11301863424, 11029407744, 10756952064, 10484496384,
             10212040704, 9939585024, 9667129344],
    "resnet": [1819065856, 4111512576, 3755463680, 3767505920, 3547935744, 3134686208, 2915718144, 2928161792,
               2709193728, 2490225664],
    "resnet-swin": [1819065856, 4509194496, 4095543552, 3730713856, 3375768832, 3252235520, 2897290496,
                    2542345472],
    "levit": [661663808, 1133412864, 1020918272, 977741824, 934565376, 812300576, 791247040, 770193504],
}


@pytest.mark.parametrize("family_name", ["swin", "resnet", "resnet-swin", "levit"])
def test_space_counts_and_costs_are_the_references(family_name):
    family = get_family(family_name)
    space = family.space()
    reference = REFERENCE_GMACS[family_name]
    assert len(space) == len(reference)
    costs = space_costs(family, space)
    # within 1 % is the bar; the per-piece sums meet the reference's whole-model traces exactly
    assert [c.macs for c in costs] == reference


@pytest.mark.parametrize("family_name", ["swin", "resnet", "resnet-swin", "levit", "mini-resnet"])
def test_anchors_reproduce_their_timm_models_exactly(family_name):
    net = StitchableNet.from_family(family_name).eval()
    x = torch.randn(1, *net.family.input_size)
    with torch.no_grad():
        for index, anchor in enumerate(net.anchors):
            assert torch.equal(net(x, stitch=index), anchor(x))


def test_mini_resnet_stitches_inside_its_first_three_stages_at_exactly_traced_costs():
    net = StitchableNet.from_family("mini-resnet").eval()
    space = net.space
    # ResNet-34's stages (3, 4, 6, 3 blocks) in all three anchors: forward positions (j, j + 1)
    # inside stages 0-2, two pairs: (2 + 3 + 5) x 2 stitches, each with its own 1x1 convolution
    assert len(space) == 3 + 20 and space.num_layers == 20
    assert {c.stage for c in space.configs[3:]} == {0, 1, 2}
    assert all(isinstance(layer, torch.nn.Conv2d) for layer in net.stitch_layers)
    costs = space_costs(net.family, space)
    assert [c.macs for c in costs] == [trace_config_macs(net, c.id) for c in space]
    assert costs[0].macs < costs[1].macs < costs[2].macs


def test_stage_spaces_stitch_inside_stages_with_one_layer_per_front_block():
    space = get_family("swin").space()
    # stage 0 and 1 (2 blocks each): one position per pair, (0, 1) of the stage
    assert [(c.stage, c.front, c.back, c.front_block, c.back_block) for c in space.configs[3:7]] == [
        (0, 0, 1, 0, 1), (0, 1, 2, 0, 1), (1, 0, 1, 2, 3), (1, 1, 2, 2, 3)]
    # stage 2, Ti (6 blocks) -> S (18): back block k leaves front block k // 3; one layer per front block.
    # The reference zips this list with its block mapping, which puts (1, 3) on layer 0; here it is
    # on front block 1's layer, with (1, 4) and (1, 5).
    ti_s = [c for c in space if c.stage == 2 and c.front == 0]
    assert [(c.front_block - 4, c.back_block - 4) for c in ti_s] == \
        [(0, 1), (0, 2)] + [(j, k) for j in range(1, 6) for k in range(3 * j, 3 * j + 3)]
    layers = {}
    for c in ti_s:
        layers.setdefault(c.front_block, set()).add(c.layer)
    assert all(len(used) == 1 for used in layers.values()) and len(set().union(*layers.values())) == 6
    s_b = [c for c in space if c.stage == 2 and c.front == 1]
    assert len(s_b) == 17 and len({c.layer for c in s_b}) == 17  # equal depth: paired, forward only
    assert space.num_layers == 2 + 2 + 6 + 17


def test_cnn_into_vit_runs_forward_and_backward_after_least_squares():
    torch.manual_seed(0)
    net = StitchableNet.from_family("resnet-swin")
    least_squares_init(net, [torch.randn(2, 3, 224, 224)])
    net.train()
    config = net.space[4]  # resnet18 layer3 block 0 -> swin_tiny stage 2
    assert type(net.stitch_layers[config.layer]).__name__ == "MapToTokens"
    net(torch.randn(2, 3, 224, 224), stitch=4).sum().backward()
    used = {name.split(".")[0] + "." + name.split(".")[1] for name, p in net.named_parameters() if p.grad is not None}
    assert used == {"anchors.0", "anchors.1", f"stitch_layers.{config.layer}"}


KINDS = [  # (front, back): every kind the factory makes
    (Activation("tokens", 6, (12,)), Activation("tokens", 9, (12,))),
    (Activation("tokens", 6, (3, 4)), Activation("tokens", 9, (3, 4))),
    (Activation("map", 6, (3, 4)), Activation("map", 9, (3, 4))),
    (Activation("map", 6, (3, 4)), Activation("tokens", 9, (3, 4))),
    (Activation("map", 6, (3, 4)), Activation("tokens", 9, (12,))),
    (Activation("tokens", 6, (12,)), Activation("map", 9, (3, 4))),
]


def _tensor(values: torch.Tensor, shape: Activation) -> torch.Tensor:
    """N x positions x C values laid out as the activation keeps them."""
    if shape.layout == "map":
        return values.reshape(values.shape[0], *shape.spatial, -1).movedim(-1, 1)
    return values.reshape(values.shape[0], *shape.spatial, -1)


@pytest.mark.parametrize("front, back", KINDS)
def test_least_squares_recovers_a_permuted_copy_for_every_kind_of_layer(front, back):
    torch.manual_seed(0)
    values = torch.randn(5, front.positions, front.channels, dtype=torch.float64)
    # the back's channels: the front's, and three affine copies of some, in a shuffled order
    perm = torch.randperm(back.channels)
    target = torch.cat([values, 2 * values[..., :3] - 1], dim=-1)[..., perm]
    a, b = _tensor(values, front), _tensor(target, back)
    layer = make_stitching_layer(front, back).double()
    a1 = torch.cat([rows(a, front.layout), torch.ones(5 * front.positions, 1, dtype=torch.float64)], dim=1)
    load_solution(layer, torch.linalg.lstsq(a1, rows(b, back.layout)).solution)
    with torch.no_grad():
        assert layer(a).shape == b.shape
        assert torch.allclose(layer(a), b, atol=1e-9)


def test_mismatched_positions_cannot_be_stitched():
    from snnet.errors import SnnetError

    with pytest.raises(SnnetError, match="cannot stitch 12 positions per sample into 16"):
        make_stitching_layer(Activation("map", 6, (3, 4)), Activation("tokens", 9, (4, 4)))


def test_a_path_with_two_stitch_points_runs_and_costs_exactly(mini):
    space = mini.space()
    ti_s, s_b = space[3 + 3 * 3 + 1].layer, space[37 + 3 * 7 + 1].layer  # the layers of (3, 4) and (7, 8)
    assert (space[3 + 3 * 3 + 1].front_block, space[37 + 3 * 7 + 1].front_block) == (3, 7)
    space = space.with_paths([((Segment(0, 0, 3), Segment(1, 4, 7), Segment(2, 8, 11)), (ti_s, s_b))])
    torch.manual_seed(0)
    net = StitchableNet(mini, [mini.build_anchor(i) for i in range(3)], space).eval()
    x = torch.randn(2, *mini.input_size)
    with torch.no_grad():
        h = net.adapters[0].embed(net.anchors[0], x)
        for block in net.anchors[0].blocks[:4]:
            h = block(h)
        h = net.stitch_layers[ti_s](h)
        for block in net.anchors[1].blocks[4:8]:
            h = block(h)
        h = net.stitch_layers[s_b](h)
        for block in net.anchors[2].blocks[8:]:
            h = block(h)
        expected = net.anchors[2].forward_head(net.anchors[2].norm(h))
        assert torch.equal(net(x, stitch=71), expected)
    cost = space_costs(mini, space)[71]
    assert trace_config_macs(net, 71) == cost.macs
    net(torch.randn(1, *mini.input_size), stitch=71).sum().backward()
    assert sum(p.numel() for p in net.parameters() if p.grad is not None) == cost.params
    row = space.describe(space[71])
    assert row["path"] == [["mini_tiny", 0, 3], ["mini_small", 4, 7], ["mini_base", 8, 11]]
    assert row["layers"] == [ti_s, s_b]


def test_what_timm_exempts_from_weight_decay_gets_none():
    from snnet.train import TrainConfig, param_groups

    net = StitchableNet.from_family("swin", device="meta")
    groups = param_groups(net, TrainConfig())
    exempt = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    tables = [p for n, p in net.named_parameters() if n.endswith("relative_position_bias_table")]
    assert len(tables) == 12 + 24 + 24 and all(id(p) in exempt for p in tables)
    assert id(net.anchors[0].layers[0].blocks[0].attn.qkv.weight) not in exempt
