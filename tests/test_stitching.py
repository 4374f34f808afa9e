import copy

import pytest
import torch

from snnet.errors import SnnetError
from snnet.model import StitchableNet
from snnet.space import build_space
from snnet.stitching import collect_statistics, least_squares_init, solve_layers


@torch.no_grad()
def permuted_copy(model, perm):
    """The same function with residual-stream channels permuted (LayerNorm is permutation-equivariant)."""
    twin = copy.deepcopy(model)
    twin.patch_embed.proj.weight.copy_(model.patch_embed.proj.weight[perm])
    twin.patch_embed.proj.bias.copy_(model.patch_embed.proj.bias[perm])
    twin.cls_token.copy_(model.cls_token[..., perm])
    twin.pos_embed.copy_(model.pos_embed[..., perm])
    for block, source in zip(twin.blocks, model.blocks):
        for norm, source_norm in [(block.norm1, source.norm1), (block.norm2, source.norm2)]:
            norm.weight.copy_(source_norm.weight[perm])
            norm.bias.copy_(source_norm.bias[perm])
        block.attn.qkv.weight.copy_(source.attn.qkv.weight[:, perm])
        block.attn.proj.weight.copy_(source.attn.proj.weight[perm])
        block.attn.proj.bias.copy_(source.attn.proj.bias[perm])
        block.mlp.fc1.weight.copy_(source.mlp.fc1.weight[:, perm])
        block.mlp.fc2.weight.copy_(source.mlp.fc2.weight[perm])
        block.mlp.fc2.bias.copy_(source.mlp.fc2.bias[perm])
    twin.norm.weight.copy_(model.norm.weight[perm])
    twin.norm.bias.copy_(model.norm.bias[perm])
    twin.head.weight.copy_(model.head.weight[:, perm])
    return twin


@pytest.fixture(scope="module")
def model_and_twin():
    torch.manual_seed(1)
    from snnet.families import get_family

    family = get_family("mini")
    model = family.build_anchor(1)
    with torch.no_grad():  # give every parameter a non-trivial value, the head included
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    perm = torch.randperm(family.adapter.width(model))
    twin = permuted_copy(model, perm)
    x = torch.randn(4, *family.input_size)
    with torch.no_grad():
        assert torch.allclose(model(x), twin(x), rtol=1e-5, atol=1e-5)  # the copy is the same function
    return family, model, twin


def test_least_squares_recovers_a_permuted_copy_at_every_block(model_and_twin):
    family, model, twin = model_and_twin
    depth = len(model.blocks)
    space = build_space(["model", "twin"], [depth, depth], windows=[[(j, j + 1)] for j in range(depth - 1)])
    net = StitchableNet(family, [model, twin], space)
    batches = [torch.randn(16, *family.input_size) for _ in range(3)]
    residuals = least_squares_init(net, batches)
    assert max(residuals.values()) < 1e-6
    x = torch.randn(8, *family.input_size)
    with torch.no_grad():
        reference = model(x)
        for config in space.configs[2:]:
            error = (net(x, stitch=config.id) - reference).norm() / reference.norm()
            assert error < 1e-4, (config.front_block, float(error))


def test_reported_residuals_match_the_activations(mini):
    torch.manual_seed(2)
    net = StitchableNet.from_family(mini)
    batches = [torch.randn(8, *mini.input_size) for _ in range(2)]
    residuals = least_squares_init(net, batches, rule="mean")
    with torch.no_grad():
        for stitch_id in (3, 24, 40, 70):
            config = net.space[stitch_id]
            errors, norms = 0.0, 0.0
            for x in batches:
                a = net.block_tokens(config.front, x)[config.front_block + 1]
                b = net.block_tokens(config.back, x)[config.back_block]
                errors += float(((net.stitch_layers[config.layer](a) - b) ** 2).sum())
                norms += float((b ** 2).sum())
            assert residuals[stitch_id] == pytest.approx((errors / norms) ** 0.5, rel=1e-3)


def test_joint_rule_fits_each_window_no_worse_than_the_mean(mini):
    torch.manual_seed(3)
    net = StitchableNet.from_family(mini)
    batches = [torch.randn(8, *mini.input_size) for _ in range(2)]
    stats = collect_statistics(net, batches)
    joint = least_squares_init(net, batches, rule="joint")
    mean = least_squares_init(net, batches, rule="mean")
    for layer in range(net.space.num_layers):
        ids = [c.id for c in net.space if c.layer == layer]
        assert sum(joint[i] ** 2 * stats.target_sq[i] for i in ids) <= \
            sum(mean[i] ** 2 * stats.target_sq[i] for i in ids) * (1 + 1e-9)


def test_dead_channels_make_a_singular_system_that_still_solves(model_and_twin):
    family, model, _ = model_and_twin
    dead = copy.deepcopy(model)
    half = family.adapter.width(model) // 2
    with torch.no_grad():  # nothing ever writes the upper half of the residual stream
        for tensor in [dead.patch_embed.proj.weight, dead.patch_embed.proj.bias]:
            tensor[half:] = 0
        dead.cls_token[..., half:] = 0
        dead.pos_embed[..., half:] = 0
        for block in dead.blocks:
            for linear in (block.attn.proj, block.mlp.fc2):
                linear.weight[half:] = 0
                linear.bias[half:] = 0
    space = build_space(["dead", "copy"], [12, 12], windows=[[(j, j + 1)] for j in range(11)])
    net = StitchableNet(family, [dead, copy.deepcopy(dead)], space)
    stats = collect_statistics(net, [torch.randn(8, *family.input_size)])
    gram = stats.gram[(0, 5, 0)]  # front anchor, block, tokens skipped
    assert torch.linalg.matrix_rank(gram) <= half + 1
    least_squares_init(net, [torch.randn(8, *family.input_size)])
    assert all(torch.isfinite(p).all() for p in net.stitch_layers.parameters())
    x = torch.randn(4, *family.input_size)
    with torch.no_grad():
        reference = dead(x)
        for config in space.configs[2:]:
            assert (net(x, stitch=config.id) - reference).norm() / reference.norm() < 1e-4


def test_bad_rule_and_no_data(mini):
    net = StitchableNet.from_family(mini)
    with pytest.raises(SnnetError, match="unknown least-squares rule"):
        least_squares_init(net, [torch.randn(2, *mini.input_size)], rule="median")
    with pytest.raises(SnnetError, match="no activations"):
        solve_layers(net, collect_statistics(net, []))
