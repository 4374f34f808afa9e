"""Stitch training: by feature matching (every layer at once, no labels), then on the task.

The parents stay frozen (no gradients, eval mode, so batch norms keep their running statistics).
Each layer maps one parent's activation at a matched point onto the other parent's activation at
its own matched point, which is what the block the layer enters was trained to see. So each layer
is trained to minimise the mean squared error between its output and that activation, starting from
the least-squares fit (`least_squares_init`), which gradient steps refine through the nonlinear
rows it cannot fit (a ViT's class token made from a map, batches it never saw at once).

Feature matching alone leaves offspring of parents as different as a ViT and a ResNet near chance:
a per-position linear map fits the other parent's activation only in part (relative residuals of
0.4 to 0.6 on the mini preset), and the blocks downstream amplify what it misses. So a second phase
trains the layers on the task, still with the parents frozen: at each step every single stitch runs
on the batch (one prefix-sharing pass, which also runs the parents), and each is trained towards
the labels and towards the parents' ensemble, whose averaged logits are the teacher (distillation).
"""
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from snnet.errors import SnnetError
from snnet.model import StitchableNet
from snnet.stitching import fitted_stitches, least_squares_init
from snnet.train import lr_factor, resolve_device
from snnet.weights import save_weights


@dataclass
class StitchTrainConfig:
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 20  # read by snnet.train.lr_factor, with `steps`
    weight_decay: float = 0.0  # a layer's map is fitted, not regularised towards zero
    seed: int = 0
    device: str = "cpu"


@dataclass
class TaskTrainConfig:
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-2
    warmup_steps: int = 20  # read by snnet.train.lr_factor, with `steps`
    distill: float = 0.5  # the loss: (1 - distill) x cross-entropy on labels + distill x KL to the teacher
    seed: int = 0
    device: str = "cpu"


def layer_points(net: StitchableNet) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
    """Every stitching layer's (source, target), each (anchor, point): the layer reads the source
    point's activation and replaces the target point's."""
    joined = {}
    for config in fitted_stitches(net):
        joined.setdefault(config.layer, ((config.front, config.front_block + 1), (config.back, config.back_block)))
    return dict(sorted(joined.items()))


def _wanted(joined) -> dict[int, set[int]]:
    wanted = {}
    for source, target in joined.values():
        for anchor, point in (source, target):
            wanted.setdefault(anchor, set()).add(point)
    return wanted


def feature_losses(net: StitchableNet, x: torch.Tensor, joined=None) -> dict[int, torch.Tensor]:
    """Each layer's MSE against the activation it replaces, on one batch (differentiable in the layers)."""
    joined = layer_points(net) if joined is None else joined
    with torch.no_grad():
        found = net.anchor_points(x, _wanted(joined))
    return {layer: nn.functional.mse_loss(net.stitch_layers[layer](found[source]), found[target])
            for layer, (source, target) in joined.items()}


@torch.no_grad()
def feature_mse(net: StitchableNet, batches: Iterable[torch.Tensor]) -> dict[int, float]:
    """Each layer's MSE over batches (weighted by batch size): what training lowers."""
    joined, sums, count = layer_points(net), {}, 0
    device = next(net.parameters()).device
    for x in batches:
        for layer, loss in feature_losses(net, x.to(device), joined).items():
            sums[layer] = sums.get(layer, 0.0) + float(loss) * len(x)
        count += len(x)
    return {layer: total / count for layer, total in sums.items()}


def train_stitches(net: StitchableNet, images: Callable[[int], torch.Tensor], config: StitchTrainConfig,
                   fit_batches: Optional[Iterable[torch.Tensor]] = None, out_path: Optional[Path] = None) -> dict:
    """Least squares on `fit_batches` (when given), then AdamW on the sum of the layers' feature
    MSEs over `images(epoch)` (an N x C x H x W tensor per epoch). Writes the net's weights to
    `out_path` when given; returns a summary."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    net.to(device).eval()  # the parents' batch norms and dropouts as at inference
    for param in net.anchors.parameters():
        param.requires_grad_(False)
    residuals = least_squares_init(net, fit_batches) if fit_batches is not None else None
    joined = layer_points(net)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(net.stitch_layers.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    step, epoch, first_losses, losses = 0, 0, None, {}
    while step < config.steps:
        epoch_images = images(epoch)
        if len(epoch_images) < config.batch_size:
            raise SnnetError(f"batch size {config.batch_size} is larger than an epoch of {len(epoch_images)} images")
        order = torch.randperm(len(epoch_images), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            x = epoch_images[order[start: start + config.batch_size]].to(device)
            per_layer = feature_losses(net, x, joined)
            optimizer.zero_grad(set_to_none=True)
            sum(per_layer.values()).backward()
            optimizer.step()
            scheduler.step()
            losses = {layer: float(loss.detach()) for layer, loss in per_layer.items()}
            first_losses = first_losses or losses
            step += 1
            if step >= config.steps:
                break
        epoch += 1
    for param in net.anchors.parameters():
        param.requires_grad_(True)
    summary = {"steps": step, "first_loss": first_losses, "final_loss": losses,
               "least_squares_residuals": residuals, "train_s": time.perf_counter() - started,
               "config": asdict(config)}
    if out_path is not None:
        save_weights(net, out_path)
    return summary


def task_losses(net: StitchableNet, images: torch.Tensor, labels: torch.Tensor, distill: float) -> torch.Tensor:
    """The mean over single stitches of (1 - distill) x cross-entropy + distill x KL(teacher || stitch),
    the teacher being the parents' averaged logits, all from one pass over the batch."""
    parents = [config for config in net.space if len(config.segments) == 1]
    stitches = [config for config in net.space if len(config.segments) == 2]
    logits = {}
    net.run(images, parents + stitches, lambda config, out: logits.__setitem__(config.id, out))
    teacher = F.log_softmax(torch.stack([logits[c.id] for c in parents]).mean(0).detach(), dim=1)
    total = 0.0
    for config in stitches:
        log_p = F.log_softmax(logits[config.id], dim=1)
        total = total + (1 - distill) * F.nll_loss(log_p, labels) + distill * F.kl_div(
            log_p, teacher, log_target=True, reduction="batchmean")
    return total / len(stitches)


def train_on_task(net: StitchableNet, data: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                  config: TaskTrainConfig) -> dict:
    """AdamW on `task_losses` over `data(epoch)` (images and labels per epoch), parents frozen;
    returns a summary."""
    if not 0.0 <= config.distill <= 1.0:
        raise SnnetError(f"distill is a weight between 0 and 1, got {config.distill}")
    started = time.perf_counter()
    device = resolve_device(config.device)
    net.to(device).eval()
    for param in net.anchors.parameters():
        param.requires_grad_(False)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(net.stitch_layers.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    step, epoch, first_loss, loss_avg = 0, 0, None, None
    while step < config.steps:
        images, labels = data(epoch)
        if len(labels) < config.batch_size:
            raise SnnetError(f"batch size {config.batch_size} is larger than an epoch of {len(labels)} images")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            index = order[start: start + config.batch_size]
            loss = task_losses(net, images[index].to(device), labels[index].to(device), config.distill)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            first_loss = value if first_loss is None else first_loss
            loss_avg = value if loss_avg is None else 0.95 * loss_avg + 0.05 * value
            step += 1
            if step >= config.steps:
                break
        epoch += 1
    for param in net.anchors.parameters():
        param.requires_grad_(True)
    return {"steps": step, "first_loss": first_loss, "final_loss": loss_avg,
            "train_s": time.perf_counter() - started, "config": asdict(config)}
