import torch

from snnet.evaluate import _Tally, evaluate_space
from snnet.model import StitchableNet


def test_prefix_sharing_gives_exactly_the_numbers_of_each_configuration_alone(mini):
    torch.manual_seed(0)
    net = StitchableNet.from_family(mini).eval()
    with torch.no_grad():
        for p in net.parameters():  # spread the logits so that accuracy differs between stitches
            p.add_(0.05 * torch.randn_like(p))
    images, labels = torch.randn(40, *mini.input_size), torch.randint(0, 10, (40,))
    shared = evaluate_space(net, images, labels, batch_size=16)
    alone = {}
    with torch.no_grad():
        for config in net.space:
            tally = _Tally()
            for start in range(0, 40, 16):
                tally.add(net(images[start:start + 16], stitch=config.id), labels[start:start + 16])
            alone[config.id] = tally.result()
    assert shared == alone
    assert len({round(r["loss"], 6) for r in shared.values()}) > 30


def test_a_subset_of_configurations(mini):
    net = StitchableNet.from_family(mini).eval()
    images, labels = torch.randn(8, *mini.input_size), torch.randint(0, 10, (8,))
    subset = evaluate_space(net, images, labels, [2, 40, 5])
    assert set(subset) == {2, 40, 5}
    assert subset == {i: r for i, r in evaluate_space(net, images, labels).items() if i in (2, 40, 5)}
