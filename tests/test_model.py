import pytest
import torch

from snnet.errors import SnnetError
from snnet.model import StitchableNet


@pytest.mark.parametrize("family_name", ["mini", "deit"])
def test_anchor_configurations_reproduce_plain_timm_exactly(family_name):
    net = StitchableNet.from_family(family_name)
    family = net.family
    x = torch.randn(2, *family.input_size)
    with torch.no_grad():
        for index in range(len(family.anchors)):
            assert torch.equal(net(x, stitch=index), net.anchors[index](x))


def test_every_configuration_runs_and_switching_allocates_nothing(mini):
    net = StitchableNet.from_family(mini)
    storage = {name: p.data_ptr() for name, p in net.named_parameters()}
    x = torch.randn(3, *mini.input_size)
    with torch.no_grad():
        for config in net.space:
            net.set_stitch(config.id)
            assert net(x).shape == (3, mini.num_classes)
    assert {name: p.data_ptr() for name, p in net.named_parameters()} == storage


def test_active_stitch_and_bad_ids(mini):
    net = StitchableNet.from_family(mini).eval()
    x = torch.randn(2, *mini.input_size)
    net.set_stitch(24)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, stitch=24))
        assert not torch.equal(net(x), net(x, stitch=25))
    with pytest.raises(SnnetError, match="stitch id 71 is out of range"):
        net.set_stitch(71)
    with pytest.raises(SnnetError, match="out of range"):
        net(x, stitch=-1)


def test_training_mode_samples_from_a_seeded_generator(mini):
    x = torch.randn(1, *mini.input_size)

    def sampled(seed):
        net = StitchableNet.from_family(mini, seed=seed).train()
        ids = []
        for _ in range(40):
            net(x)
            ids.append(net.last_stitch)
        return ids

    first = sampled(7)
    assert first == sampled(7) and first != sampled(8)
    assert len(set(first)) > 10 and all(0 <= i < 71 for i in first)


def test_bf16_autocast_matches_float32(mini):
    net = StitchableNet.from_family(mini).eval()
    x = torch.randn(4, *mini.input_size)
    with torch.no_grad():
        reference = net(x, stitch=30)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, stitch=30)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), reference, atol=0.05 * reference.abs().max().item())


def test_stitches_use_exactly_their_own_parameters(mini):
    net = StitchableNet.from_family(mini)
    config = net.space[24]
    net(torch.randn(2, *mini.input_size), stitch=24).sum().backward()
    used = {name.split(".")[0] + "." + name.split(".")[1] for name, p in net.named_parameters()
            if p.grad is not None}
    assert used == {"anchors.0", "anchors.1", f"stitch_layers.{config.layer}"}
    front_blocks = {int(n.split(".")[3]) for n, p in net.named_parameters()
                    if p.grad is not None and n.startswith("anchors.0.blocks.")}
    back_blocks = {int(n.split(".")[3]) for n, p in net.named_parameters()
                   if p.grad is not None and n.startswith("anchors.1.blocks.")}
    assert front_blocks == set(range(config.front_block + 1))
    assert back_blocks == set(range(config.back_block, 12))


def test_official_path_skips_the_back_norm(mini):
    net = StitchableNet.from_family(mini).eval()
    x = torch.randn(2, *mini.input_size)
    config = net.space[40]
    with torch.no_grad():
        tokens = net.forward_front(config, net.adapter.embed(net.anchors[config.front], x))
        tokens = net.stitch_layers[config.layer](tokens)
        for block in net.anchors[config.back].blocks[config.back_block:]:
            tokens = block(tokens)
        net.final_norm = False
        assert torch.equal(net(x, stitch=40), net.anchors[config.back].forward_head(tokens))
        net.final_norm = True
        normed = net.anchors[config.back].forward_head(net.anchors[config.back].norm(tokens))
        assert torch.equal(net(x, stitch=40), normed)


@pytest.mark.slow
def test_compiled_blocks_predict_as_the_eager_ones_and_share_their_weights(mini):
    torch.manual_seed(0)
    net = StitchableNet.from_family(mini).eval()
    x = torch.randn(8, *mini.input_size)
    configs = [net.space[i] for i in (0, 2, 24, 60)]

    def outputs(compiled: bool) -> dict:
        found = {}
        with torch.inference_mode():
            if compiled:
                with net.compiled():
                    net.run(x, configs, lambda config, logits: found.__setitem__(config.id, logits))
            else:
                net.run(x, configs, lambda config, logits: found.__setitem__(config.id, logits))
        return found

    eager, compiled = outputs(False), outputs(True)
    assert all(torch.allclose(eager[i], compiled[i], atol=1e-5) for i in eager)
    assert net.blocks[2][5] is net.anchors[2].blocks[5]  # eager again outside the context
    with torch.no_grad():
        net.anchors[2].blocks[5].mlp.fc2.weight.mul_(-1.0)  # compiled blocks read the weights as they are now
    eager, compiled = outputs(False), outputs(True)
    assert all(torch.allclose(eager[i], compiled[i], atol=1e-5) for i in eager)
