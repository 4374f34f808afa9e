"""Evaluation: top-1, top-5, loss and latency for every configuration of a StitchableNet.

Prefix sharing (StitchableNet.run): a batch's front anchor runs its blocks once, and every stitch
that leaves that anchor after block j continues from the activation it had after block j. The
numbers are identical to running each configuration alone (tests/test_evaluate.py), at a fraction
of the cost.
"""
import time
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from snnet.model import StitchableNet


class _Tally:
    def __init__(self):
        self.correct1 = self.correct5 = 0
        self.loss = 0.0
        self.count = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        self.correct1 += int((top[:, 0] == labels).sum())
        self.correct5 += int((top == labels[:, None]).any(dim=1).sum())
        self.loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        self.count += len(labels)

    def result(self) -> dict:
        return {"top1": 100.0 * self.correct1 / self.count, "top5": 100.0 * self.correct5 / self.count,
                "loss": self.loss / self.count}


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Iterable:
    for start in range(0, len(images), batch_size):
        yield images[start: start + batch_size], labels[start: start + batch_size]


@torch.inference_mode()
def evaluate_space(
    net: StitchableNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    stitch_ids: Optional[Sequence[int]] = None,
    batch_size: int = 256,
    show_bar: bool = False,
    bf16: bool = False,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> dict[int, dict]:
    """Accuracy and loss of the chosen configurations (all by default) on tensors held in memory."""
    batches = list(_batches(images, labels, batch_size))
    return evaluate_batches(net, batches, stitch_ids, show_bar, total=len(batches), bf16=bf16, on_batch=on_batch)


@torch.inference_mode()
def evaluate_batches(
    net: StitchableNet,
    batches: Iterable,
    stitch_ids: Optional[Sequence[int]] = None,
    show_bar: bool = False,
    total: Optional[int] = None,
    bf16: bool = False,
    on_batch: Optional[Callable[[int, int], None]] = None,
) -> dict[int, dict]:
    """Accuracy and loss of the chosen configurations over (images, labels) batches, sharing front
    prefixes; a DataLoader streams data too large to hold. Under torch.distributed every rank passes
    its own shard and the tallies are summed, so every rank returns the numbers of the whole set.
    `on_batch(done, total)` follows progress (a background job reports it, and may stop there)."""
    net.eval()
    device = next(net.parameters()).device
    configs = [net.space[i] for i in (range(len(net.space)) if stitch_ids is None else stitch_ids)]
    tallies = {config.id: _Tally() for config in configs}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    for done, (x, y) in enumerate(tqdm(batches, disable=not show_bar, unit="batch", desc="evaluating", total=total)):
        if on_batch is not None:
            on_batch(done, total)
        x, y = x.to(device), y.to(device)
        with autocast:
            net.run(x, configs, lambda config, logits: tallies[config.id].add(logits, y))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        _sum_across_ranks(tallies, device)
    return {stitch_id: tally.result() for stitch_id, tally in tallies.items()}


def _sum_across_ranks(tallies: dict[int, "_Tally"], device: torch.device) -> None:
    # float64 keeps the loss sum and counts exact well beyond ImageNet's 50k images
    totals = torch.tensor([[t.correct1, t.correct5, t.loss, t.count] for t in tallies.values()],
                          dtype=torch.float64, device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(totals)
    for tally, (correct1, correct5, loss, count) in zip(tallies.values(), totals.tolist()):
        tally.correct1, tally.correct5, tally.loss, tally.count = int(correct1), int(correct5), loss, int(count)


def folder_loader(dataset, batch_size: int = 256, workers: int = 4):
    """This rank's shard of a dataset in fixed order: ranks take every world-th image, so the shards
    are disjoint and cover the set exactly (no padding duplicates, unlike DistributedSampler)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    return torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       pin_memory=torch.cuda.is_available())


@torch.inference_mode()
def evaluate_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> dict:
    model.eval()
    device = next(model.parameters()).device
    tally = _Tally()
    for x, y in _batches(images, labels, batch_size):
        tally.add(model(x.to(device)), y.to(device))
    return tally.result()


@torch.inference_mode()
def latency_ms(forward, sample: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward pass on `sample` (synchronised on CUDA)."""
    times = []
    for i in range(warmup + repeats):
        if sample.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        forward(sample)
        if sample.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def space_latency(net: StitchableNet, sample: torch.Tensor, stitch_ids: Optional[Sequence[int]] = None,
                  repeats: int = 20) -> dict[int, float]:
    net.eval()
    ids = range(len(net.space)) if stitch_ids is None else stitch_ids
    return {i: latency_ms(lambda x, i=i: net(x, stitch=i), sample, repeats) for i in ids}
