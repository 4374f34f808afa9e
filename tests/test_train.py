import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snnet.errors import SnnetError
from snnet.model import StitchableNet
from snnet.train import Progress, TrainConfig, flops_group_weights, train
from snnet.weights import read_weights

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(steps=6, batch_size=16, warmup_steps=2, checkpoint_every=3, device="cpu", bf16=False)


def _fresh(mini, name="mini_tiny"):
    torch.manual_seed(0)
    return mini.build_model(mini.model_spec(name))


def test_training_lowers_the_loss_and_writes_weights(mini, tmp_path):
    losses = []
    config = TrainConfig(**{**TINY, "steps": 30, "lr": 3e-3})
    summary = train(_fresh(mini), mini.task.train_data(mini), config, tmp_path, progress=lambda p: losses.append(p.loss),
                    show_bar=False)
    assert (tmp_path / "model.safetensors").exists() and json.loads((tmp_path / "train.json").read_text())
    assert len(losses) == 30 and losses[-1] < losses[0]
    assert summary["final_loss"] == pytest.approx(losses[-1])


def test_an_interrupted_run_resumes_to_the_same_weights(mini, tmp_path):
    config = TrainConfig(**TINY)
    train(_fresh(mini), mini.task.train_data(mini), config, tmp_path / "straight", show_bar=False)

    def crash(progress: Progress):
        if progress.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_fresh(mini), mini.task.train_data(mini), config, tmp_path / "resumed", progress=crash, show_bar=False)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    train(_fresh(mini), mini.task.train_data(mini), config, tmp_path / "resumed", show_bar=False)
    straight = read_weights(tmp_path / "straight" / "model.safetensors")
    resumed = read_weights(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    with pytest.raises(SnnetError, match="belongs to a run with other settings"):
        train(_fresh(mini), mini.task.train_data(mini), TrainConfig(**{**TINY, "steps": 9}), tmp_path / "resumed", show_bar=False)
    # a finished run of another learning rate is not taken for this one (it would return at once)
    with pytest.raises(SnnetError, match="other settings \\(lr 0"):
        train(_fresh(mini), mini.task.train_data(mini), TrainConfig(**{**TINY, "lr": 0.5}), tmp_path / "resumed", show_bar=False)
    # how a run is carried out may change on resume
    train(_fresh(mini), mini.task.train_data(mini), TrainConfig(**{**TINY, "checkpoint_every": 1}), tmp_path / "resumed",
          show_bar=False)


def test_snnet_training_samples_only_the_chosen_stitches_and_moves_anchors_slower(mini, tmp_path):
    torch.manual_seed(0)
    net = StitchableNet.from_family(mini)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []
    config = TrainConfig(**{**TINY, "steps": 12, "stitches": [3, 24, 40], "lr": 1e-2, "anchor_lr": 1e-4})
    train(net, mini.task.train_data(mini), config, tmp_path, progress=lambda p: seen.append(p.stitch), show_bar=False)
    assert set(seen) <= {3, 24, 40} and len(set(seen)) > 1
    after = net.state_dict()
    layer = net.space[24].layer
    moved = lambda k: float((after[k] - before[k]).abs().max())
    assert moved(f"stitch_layers.{layer}.weight") > 10 * moved("anchors.1.blocks.11.mlp.fc2.weight") > 0


def test_with_distill_one_the_labels_play_no_part(mini, tmp_path):
    """The loss is then the KL to the frozen largest anchor alone: runs on the true labels and on
    shuffled ones take the very same steps; at distill 0.5 they do not."""
    def shuffled(epoch):
        images, labels = mini.task.train_data(mini)(epoch)
        return images, labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))]

    def run(data, distill: float, name: str) -> dict:
        torch.manual_seed(0)
        net = StitchableNet.from_family(mini)
        train(net, data, TrainConfig(**{**TINY, "distill": distill}), tmp_path / name, show_bar=False)
        return net.state_dict()

    true, wrong = run(mini.task.train_data(mini), 1.0, "true"), run(shuffled, 1.0, "shuffled")
    assert all(torch.equal(true[k], wrong[k]) for k in true)
    half_true, half_wrong = run(mini.task.train_data(mini), 0.5, "half-true"), run(shuffled, 0.5, "half-shuffled")
    assert not all(torch.equal(half_true[k], half_wrong[k]) for k in half_true)


def test_distillation_moves_a_stitch_towards_the_largest_anchor(mini, tmp_path):
    torch.manual_seed(0)
    net = StitchableNet.from_family(mini)
    images, _ = mini.task.eval_set(mini, "val")
    images = images[:256]

    def disagreement() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.kl_div(net(images, stitch=40).log_softmax(1),
                                                    net(images, stitch=2).log_softmax(1), log_target=True,
                                                    reduction="batchmean"))

    net.eval()
    start = disagreement()
    config = TrainConfig(**{**TINY, "steps": 20, "stitches": [40], "distill": 1.0, "lr": 1e-2, "anchor_lr": 0.0})
    train(net, mini.task.train_data(mini), config, tmp_path, show_bar=False)
    net.eval()
    assert disagreement() < 0.5 * start


def test_distillation_is_for_snnet_with_a_weight_up_to_one(mini, tmp_path):
    with pytest.raises(SnnetError, match="distill is a weight"):
        train(_fresh(mini), mini.task.train_data(mini), TrainConfig(**{**TINY, "distill": 0.5}), tmp_path, show_bar=False)
    with pytest.raises(SnnetError, match="distill is a weight"):
        train(StitchableNet.from_family(mini), mini.task.train_data(mini), TrainConfig(**{**TINY, "distill": 1.5}),
              tmp_path, show_bar=False)


def test_flops_sampling_gives_every_cost_interval_the_same_mass():
    gmacs = [1.0, 1.1, 1.2, 1.3, 5.0, 9.0, 9.1]
    weights = flops_group_weights(gmacs, list(range(7)), groups=4)
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[4].item() == pytest.approx(1 / 3)  # alone in its interval
    assert weights[0].item() == pytest.approx(1 / 12)  # one of four in its interval


def test_an_anchor_share_gives_the_anchors_that_share_of_the_steps(mini):
    from snnet.train import configure_sampling

    net = StitchableNet.from_family(mini)
    anchors = [c.id for c in net.space if c.kind == "anchor"]
    configure_sampling(net, TrainConfig(anchor_share=0.25))
    weights = net.sampling_weights / net.sampling_weights.sum()
    assert weights[anchors].tolist() == pytest.approx([0.25 / len(anchors)] * len(anchors))
    others = [i for i in range(len(net.space)) if i not in anchors]
    assert weights[others].tolist() == pytest.approx([0.75 / len(others)] * len(others))
    drawn = [net.sample_stitch() for _ in range(4000)]
    assert sum(d in anchors for d in drawn) / len(drawn) == pytest.approx(0.25, abs=0.03)
    configure_sampling(net, TrainConfig(anchor_share=0.5, sampling="flops"))
    assert float(net.sampling_weights[anchors].sum() / net.sampling_weights.sum()) == pytest.approx(0.5)
    with pytest.raises(SnnetError, match="anchor_share"):
        configure_sampling(net, TrainConfig(anchor_share=1.5))
    with pytest.raises(SnnetError, match="anchor_share"):
        configure_sampling(net, TrainConfig(anchor_share=0.5, stitches=anchors))


@pytest.mark.slow
def test_torchrun_with_two_processes(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "snnet", "train",
         "--family", "mini", "--model", "mini_tiny", "--steps", "4", "--batch-size", "16", "--warmup-steps", "1",
         "--device", "cpu", "--out", str(tmp_path / "ddp"), "--progress-json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["step"] for line in lines if not line["done"]] == [1, 2, 3, 4]  # rank 0 alone reports
    assert lines[-1]["done"] and (tmp_path / "ddp" / "model.safetensors").exists()


@pytest.mark.slow
def test_with_sync_stitch_two_ranks_take_the_single_process_steps(tmp_path):
    """With one stitch for all ranks, two processes on half batches each equal one process on the
    whole batch (DDP averages the halves' gradients); sampling per rank, as the reference does, does not."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    common = ["-m", "snnet", "train", "--family", "mini", "--steps", "3", "--batch-size", "16",
              "--warmup-steps", "1", "--device", "cpu", "--progress-json"]
    runs = {"single": [sys.executable, *common],
            "synced": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", *common, "--sync-stitch"],
            "per_rank": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", *common]}
    weights = {}
    for name, command in runs.items():
        result = subprocess.run([*command, "--out", str(tmp_path / name)], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        weights[name] = read_weights(tmp_path / name / "model.safetensors")

    def moved(name):  # the share of weights more than 1e-4 away from the single-process run
        diffs = torch.cat([(weights[name][k] - weights["single"][k]).abs().flatten() for k in weights["single"]])
        return float((diffs > 1e-4).float().mean())

    assert moved("synced") < 1e-4
    assert moved("per_rank") > 0.01


def test_the_train_command_passes_distillation_and_the_anchor_share_on(tmp_path):
    command = [sys.executable, "-m", "snnet", "train", "--family", "mini", "--steps", "2", "--batch-size", "16",
               "--warmup-steps", "1", "--device", "cpu", "--distill", "0.5", "--anchor-share", "0.5",
               "--out", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((tmp_path / "train.json").read_text())["config"]
    assert (config["distill"], config["anchor_share"]) == (0.5, 0.5)
