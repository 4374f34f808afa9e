"""Training: single models from scratch and SN-Net stitching, in one visible loop.

SN-Net training samples one configuration per iteration (StitchableNet does that in training
mode), with AdamW, linear warm-up then cosine decay, and a learning rate for the anchors apart
from the stitching layers'. Runs are deterministic from the seed and resume from their last
checkpoint. Under torchrun every rank runs this same code on its share of each batch; rank 0
alone writes.
"""
import copy
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from snnet.errors import SnnetError
from snnet.model import StitchableNet
from snnet.weights import save_weights

SAMPLING = ("uniform", "flops")
# Settings that change how a run is carried out, not what it computes: a resumed run may change them.
RUN_ONLY = ("checkpoint_every", "checkpoint_every_s", "device", "workers")


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3  # single models, and the stitching layers of SN-Net
    anchor_lr: float = 1e-4  # the anchors inside SN-Net (the reference uses about 10x lower)
    weight_decay: float = 0.05
    warmup_steps: int = 150
    label_smoothing: float = 0.1
    sampling: str = "uniform"  # SN-Net: uniform over configurations, or over FLOPs groups
    # SN-Net: the share of steps that train an anchor on its own (split evenly among them); the rest
    # sample the other configurations. None: anchors are sampled like any configuration (1 in 71 for
    # deit and mini). Every stitch pulls on its anchors' blocks; more steps of their own hold them.
    anchor_share: Optional[float] = None
    stitches: Optional[list[int]] = None  # SN-Net: sample only these configurations
    seed: int = 0
    # a killed run loses at most this much work: a checkpoint every so many steps or seconds, whichever comes first
    checkpoint_every: int = 50
    checkpoint_every_s: float = 30.0
    device: str = "auto"
    bf16: Optional[bool] = None  # bf16 autocast; None: on for CUDA, off for CPU (slower there for small models)
    # SN-Net under torchrun: False (the reference) lets each rank sample its own configuration, so one
    # step averages gradients over as many configurations as there are ranks; True samples one for all
    # ranks, so a step is exactly a single-process step on the whole batch and runs match across GPU counts.
    sync_stitch: bool = False
    # SN-Net: BatchNorm statistics of the anchors stay as loaded. Updated, they would average the
    # anchors' own activations with every sampled stitch's, and the anchors would drift from
    # what they were trained to see.
    update_norm_stats: bool = False
    # SN-Net: the loss is (1 - distill) x cross-entropy on the labels + distill x KL from the largest
    # anchor as it was when the run began (a frozen teacher, as the reference distils DeiT from a
    # stronger network); 0 trains on the labels alone.
    distill: float = 0.0
    workers: int = 4  # DataLoader processes for image folders


@dataclass
class Progress:
    step: int
    steps: int
    loss: float
    lr: float
    images_per_s: float
    eta_s: float
    stitch: Optional[int] = None
    done: bool = False

    def json(self) -> str:
        return json.dumps(asdict(self))


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SnnetError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SnnetError(f"device {name!r} was asked for but no CUDA GPU is available")
    return device


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameters timm's models exempt from weight decay themselves (`no_weight_decay()`: position
    embeddings and class tokens, Swin's relative position tables, LeViT's attention biases)."""
    names = set()
    for prefix, module in model.named_modules():
        if callable(getattr(module, "no_weight_decay", None)):
            names |= {f"{prefix}.{name}" if prefix else name for name in module.no_weight_decay()}
    return names


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """No weight decay on biases, norms and what timm exempts; anchors of SN-Net at their own rate."""
    groups = {}
    exempt = no_decay_names(model)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        anchor = isinstance(model, StitchableNet) and name.startswith("anchors.")
        decay = param.ndim > 1 and name not in exempt and not name.endswith(("pos_embed", "cls_token", "reg_token"))
        lr = config.anchor_lr if anchor else config.lr
        key = (lr, decay)
        groups.setdefault(key, {"params": [], "lr": lr, "weight_decay": config.weight_decay if decay else 0.0})
        groups[key]["params"].append(param)
    for group in groups.values():
        group["initial_lr"] = group["lr"]
    return list(groups.values())


def flops_group_weights(gmacs: list[float], allowed: list[int], groups: int = 10) -> torch.Tensor:
    """Sampling weights that make every FLOPs interval equally likely (SN-Netv2's balanced sampling)."""
    low, high = min(gmacs[i] for i in allowed), max(gmacs[i] for i in allowed)
    width = (high - low) / groups or 1.0
    bins = {i: min(groups - 1, int((gmacs[i] - low) / width)) for i in allowed}
    sizes = {b: list(bins.values()).count(b) for b in set(bins.values())}
    weights = torch.zeros(len(gmacs))
    for i, b in bins.items():
        weights[i] = 1.0 / (len(sizes) * sizes[b])
    return weights


def freeze_norm_stats(module: nn.Module) -> None:
    """Batch norms use and keep their running statistics (their scale and shift still train)."""
    for norm in module.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.eval()


def sampled_anchors(space, allowed, anchor_share: Optional[float]) -> list[int]:
    """The anchors among the configurations sampled; with an anchor share, checks that it is one
    and that there are both anchors and other configurations to share the steps between."""
    anchors = [i for i in allowed if space[i].kind == "anchor"]
    if anchor_share is not None:
        if not 0.0 <= anchor_share <= 1.0:
            raise SnnetError(f"anchor_share is a share of the steps between 0 and 1, got {anchor_share}")
        if not anchors or len(anchors) == len(allowed):
            raise SnnetError("an anchor share needs anchors and other configurations among those sampled (anchor_share)")
    return anchors


def configure_sampling(net: StitchableNet, config: TrainConfig) -> None:
    if config.sampling not in SAMPLING:
        raise SnnetError(f"unknown sampling {config.sampling!r}: choose from {', '.join(SAMPLING)}")
    allowed = config.stitches if config.stitches is not None else list(range(len(net.space)))
    for stitch_id in allowed:
        net.space[stitch_id]  # validates the id
    anchors = sampled_anchors(net.space, allowed, config.anchor_share)
    others = [i for i in allowed if i not in anchors] if config.anchor_share is not None else allowed
    if config.sampling == "flops":
        from snnet.cost import space_costs

        weights = flops_group_weights([c.gmacs for c in space_costs(net.family, net.space)], others)
    else:
        weights = torch.zeros(len(net.space))
        weights[others] = 1.0 / len(others)
    if config.anchor_share is not None:
        weights = weights * (1 - config.anchor_share)
        weights[anchors] = config.anchor_share / len(anchors)
    net.sampling_weights = weights


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the classes, averaged over the batch."""
    return F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(teacher_logits, dim=1), log_target=True,
                    reduction="batchmean")


def frozen_teacher(model: nn.Module, config: TrainConfig) -> Optional[nn.Module]:
    """A copy of SN-Net's largest anchor that no step changes; None when the run does not distil."""
    if not config.distill:
        return None
    if not 0.0 < config.distill <= 1.0 or not isinstance(model, StitchableNet):
        raise SnnetError(f"distill is a weight in (0, 1] for SN-Net training, got {config.distill} "
                         f"for a {type(model).__name__}")
    teacher = copy.deepcopy(model.anchors[-1]).eval()
    teacher.requires_grad_(False)
    return teacher


# epoch -> (images, labels) held in memory, or -> a dataset of (image, label) read batch by batch
EpochData = Callable[[int], "tuple[torch.Tensor, torch.Tensor] | torch.utils.data.Dataset"]


def _epoch_size(epoch_data) -> int:
    return len(epoch_data[1]) if isinstance(epoch_data, tuple) else len(epoch_data)


def _epoch_batches(epoch_data, epoch: int, config: TrainConfig, skip: int = 0, rank: int = 0, world: int = 1):
    """This rank's share of each global batch of an epoch, from batch `skip` on; one seeded order
    for all ranks, so together they see every batch exactly once."""
    order = torch.randperm(_epoch_size(epoch_data), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
    usable = len(order) - len(order) % config.batch_size
    shares = [order[start: start + config.batch_size][rank::world]
              for start in range(skip * config.batch_size, usable, config.batch_size)]
    if isinstance(epoch_data, tuple):
        images, labels = epoch_data
        for index in shares:
            yield images[index], labels[index]
    else:
        # its own generator: the loader would otherwise draw its worker seeds from torch's global one
        yield from torch.utils.data.DataLoader(_SeededSamples(epoch_data, config.seed * 7919 + epoch),
                                               batch_sampler=[s.tolist() for s in shares],
                                               num_workers=config.workers, pin_memory=torch.cuda.is_available(),
                                               generator=torch.Generator().manual_seed(config.seed))


class _SeededSamples(torch.utils.data.Dataset):
    """A dataset whose random transforms (timm's crops and flips draw from Python's `random` and
    torch's global generator) are seeded per image and epoch, so a resumed run reads the very
    batches an uninterrupted one read, whichever worker process reads an image."""

    def __init__(self, dataset, epoch_seed: int):
        self.dataset, self.epoch_seed = dataset, epoch_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed = self.epoch_seed * 100_000_007 + index
        outside = random.getstate()
        with torch.random.fork_rng(devices=[]):  # the training process's own streams stay untouched
            random.seed(seed)
            torch.default_generator.manual_seed(seed)  # torch.manual_seed would reseed the GPUs' too
            try:
                return self.dataset[index]
            finally:
                random.setstate(outside)


def _steps_per_epoch(first_epoch, config: TrainConfig) -> int:
    count = _epoch_size(first_epoch) // config.batch_size
    if count == 0:
        raise SnnetError(f"batch size {config.batch_size} is larger than an epoch of training data")
    return count


def train(
    model: nn.Module,
    data: EpochData,
    config: TrainConfig,
    out_dir: Path,
    progress: Optional[Callable[[Progress], None]] = None,
    show_bar: bool = True,
) -> dict:
    """Train `model` (a plain classifier or a StitchableNet) and write `out_dir/model.safetensors`."""
    rank, world, local_rank = distributed_context()
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    out_dir = Path(out_dir)
    model.to(device).train()
    if isinstance(model, StitchableNet):
        if not config.update_norm_stats:
            freeze_norm_stats(model.anchors)
        model.generator.manual_seed(config.seed * 1_000_003 + (0 if config.sync_stitch else rank))
        configure_sampling(model, config)
    teacher = frozen_teacher(model, config)  # before resuming: the anchor as the run began with it
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(param_groups(model, config), betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    start_step, loss_avg = _resume(model, optimizer, scheduler, out_dir / "checkpoint.pt", config, device)
    if start_step and rank == 0:
        print(f"resuming at step {start_step} from {out_dir / 'checkpoint.pt'}", file=sys.stderr, flush=True)
    if start_step and isinstance(model, StitchableNet) and not config.sync_stitch and rank > 0:
        # the checkpoint holds rank 0's sampler; the other ranks must not fall into step with it
        model.generator.manual_seed(config.seed * 1_000_003 + rank + 7919 * start_step)
    runner = model
    if world > 1:
        runner = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None,
            find_unused_parameters=isinstance(model, StitchableNet))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    bf16 = config.bf16 if config.bf16 is not None else device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    first_epoch = data(0)  # every epoch has the same size; this one is reused, not rendered twice
    steps_per_epoch = _steps_per_epoch(first_epoch, config)
    bar = tqdm(total=config.steps, initial=start_step, disable=not show_bar or rank != 0, unit="step")
    step, started = start_step, time.perf_counter()
    saved_at = time.monotonic()
    while step < config.steps:
        epoch = step // steps_per_epoch
        epoch_data = first_epoch if epoch == 0 else data(epoch)
        for images, labels in _epoch_batches(epoch_data, epoch, config, step % steps_per_epoch, rank, world):
            images, labels = images.to(device), labels.to(device)
            with autocast:
                logits = runner(images).float()
                loss = criterion(logits, labels)
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(images).float()
                    loss = (1 - config.distill) * loss + config.distill * distillation_loss(logits, teacher_logits)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            loss_avg = loss_value if loss_avg is None else 0.95 * loss_avg + 0.05 * loss_value
            bar.update(1)
            bar.set_postfix(loss=f"{loss_avg:.3f}")
            if rank == 0 and progress is not None:
                rate = (step - start_step) / (time.perf_counter() - started)
                progress(Progress(step, config.steps, loss_avg, scheduler.get_last_lr()[-1],
                                  rate * config.batch_size, (config.steps - step) / rate,
                                  getattr(model, "last_stitch", None) if isinstance(model, StitchableNet) else None))
            due = (step % config.checkpoint_every == 0 or step == config.steps
                   or time.monotonic() - saved_at >= config.checkpoint_every_s)
            if rank == 0 and due:
                _save_checkpoint(model, optimizer, scheduler, step, loss_avg, out_dir / "checkpoint.pt", config, device)
                saved_at = time.monotonic()
            if step >= config.steps:
                break
    bar.close()
    summary = {"steps": config.steps, "final_loss": loss_avg, "train_s": time.perf_counter() - started,
               "config": asdict(config)}
    if rank == 0:
        save_weights(model, out_dir / "model.safetensors")
        (out_dir / "train.json").write_text(json.dumps(summary, indent=1))
    if world > 1:
        dist.barrier()
    return summary


def _save_checkpoint(model, optimizer, scheduler, step, loss_avg, path: Path, config: TrainConfig,
                     device: torch.device) -> None:
    """Everything a resumed run needs to take the very steps an uninterrupted one would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": step, "loss_avg": loss_avg,
             "config": json.dumps(asdict(config)), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    if isinstance(model, StitchableNet):
        state["sampler"] = model.generator.get_state()
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())  # after a reboot the renamed file must hold these bytes, not nothing
    _injected_fault(step)
    temporary.replace(path)  # a crash mid-save never leaves a broken checkpoint
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # and the rename itself survives a reboot
    finally:
        os.close(directory)


def _injected_fault(step: int) -> None:
    """Tests only: SNNET_FAULT=kill:STEP or oom:STEP fails the checkpoint of step STEP after its
    temporary file is written. A SIGKILL sent from outside cannot be timed into that moment, and a
    real out-of-memory cannot be provoked without starving the machine. It fires once per process."""
    action, _, at = os.environ.get("SNNET_FAULT", "").partition(":")
    if not action or at != str(step):
        return
    del os.environ["SNNET_FAULT"]  # the next job this worker starts must not inherit it
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "oom":
        raise MemoryError(f"injected out-of-memory at step {step}")


def _resume(model, optimizer, scheduler, path: Path, config: TrainConfig,
            device: torch.device) -> tuple[int, Optional[float]]:
    """The step and loss average to go on from (0 and None without a checkpoint)."""
    if not path.exists():
        return 0, None
    state = torch.load(path, map_location="cpu", weights_only=True)  # never runs code from the file
    saved = {**asdict(TrainConfig()), **json.loads(state["config"])}  # settings added since: their defaults
    differ = [name for name, value in asdict(config).items() if name not in RUN_ONLY and saved[name] != value]
    if differ:
        raise SnnetError(f"{path} belongs to a run with other settings ({', '.join(f'{n} {saved[n]}' for n in differ)}): "
                         f"remove it or pick another output folder")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "sampler" in state:
        model.generator.set_state(state["sampler"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["step"]), state.get("loss_avg")
