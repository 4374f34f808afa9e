"""Background jobs: fine-tunes, evaluations and evolve searches, each in its own process, one at a
time per device.

A page (or the CLI) submits a job, which is a row in the store, and returns at once. `dispatch`
starts a worker process for the oldest queued job of a device with nothing running. The worker
(`python -m snnet job run ID`) trains, evaluates its configurations, writes progress and results
to the store, then dispatches the next queued job of its device, so the queue drains with no page
open. Pages submit, cancel and read jobs through the store alone, so a browser refresh, or a
second browser, sees the same jobs.

A worker that dies (killed, out of memory, a reboot) fails its job with the step it reached; the
job can be resumed in its run folder, where training goes on from its last checkpoint.
"""
import ctypes.util
import functools
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional

from snnet.errors import SnnetError, out_of_memory
from snnet.store import Store

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REPORT_EVERY_S = 0.5


@dataclass
class JobSpec:
    family: str
    weights: Optional[str] = None  # StitchableNet weights to start from; None: the family's shipped ones
    stitches: Optional[list[int]] = None  # configurations to train and evaluate; None: all of them
    steps: int = 200  # 0 (and no epochs): evaluate only
    epochs: Optional[float] = None  # the length in passes over the training data instead of steps
    batch_size: int = 64
    lr: float = 1e-3  # stitching layers
    anchor_lr: float = 1e-4
    distill: float = 0.0  # weight of distillation from the largest anchor as the job begins (TrainConfig.distill)
    anchor_share: Optional[float] = None  # share of steps for the anchors on their own (TrainConfig.anchor_share)
    device: str = "cpu"
    split: Optional[str] = None  # None: the family's evaluation split (test for digits, val for ImageNet)
    seed: int = 0
    official_compat: bool = False
    data: Optional[str] = None  # ImageNet families: the folder with train/ and val/ (default $SNNET_IMAGENET)

    @property
    def kind(self) -> str:
        return "finetune" if self.steps > 0 or self.epochs else "evaluate"


class Cancelled(Exception):
    pass


def validate(spec: JobSpec) -> JobSpec:
    """Everything that can be checked before a process starts, each failure as one line; the
    spec comes back with its device named as its queue is ("auto", "cuda" and "cuda:0" are one)."""
    import torch

    from snnet.families import get_family
    from snnet.train import resolve_device, sampled_anchors

    space = get_family(spec.family).space()
    for stitch_id in spec.stitches or []:
        space[stitch_id]
    if spec.stitches is not None and not spec.stitches:
        raise SnnetError("choose at least one configuration, or all of them")
    if spec.steps < 0 or spec.batch_size < 1 or (spec.epochs is not None and spec.epochs < 0):
        raise SnnetError(f"steps and epochs must be >= 0 and batch size >= 1, got {spec.steps}, {spec.epochs} "
                         f"and {spec.batch_size}")
    if not (spec.lr > 0 and spec.anchor_lr >= 0):
        raise SnnetError(f"learning rates must be positive, got {spec.lr} and {spec.anchor_lr}")
    if not 0.0 <= spec.distill <= 1.0:
        raise SnnetError(f"distill is a weight between 0 and 1, got {spec.distill}")
    sampled_anchors(space, spec.stitches if spec.stitches is not None else range(len(space)), spec.anchor_share)
    if spec.weights is not None and not Path(spec.weights).is_file():
        raise SnnetError(f"weights file {spec.weights} not found")
    device = resolve_device(spec.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return replace(spec, device=str(device))


def submit(spec: JobSpec, store: Store) -> int:
    spec = validate(spec)
    job_id = store.add_job(spec.kind, spec.family, spec.device, asdict(spec), steps=spec.steps)
    dispatch(store, spec.device)
    return job_id


def subprocess_environment(allocator: bool = True) -> dict:
    """This environment, with the project importable: for the processes snnet starts itself. With
    `allocator`, they allocate through tcmalloc where the machine has it (see `faster_allocator`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    library = faster_allocator() if allocator else None
    if library is not None:
        env["LD_PRELOAD"] = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))
    return env


@functools.cache
def faster_allocator() -> Optional[str]:
    """tcmalloc (Debian's libtcmalloc-minimal4), when installed: under glibc's malloc a worker
    running every configuration fragments its heap, and its resident memory grew with the number of
    configurations (deit, 16 images: 8 at once and all 71 differ by hundreds of MB); under tcmalloc
    it stays flat, and runs faster (python -m snnet bench). SNNET_ALLOCATOR=system keeps glibc's."""
    if sys.platform != "linux" or os.environ.get("SNNET_ALLOCATOR") == "system":
        return None
    return ctypes.util.find_library("tcmalloc_minimal")


def run_dir(store: Store, job_id: int) -> Path:
    return store.path.parent / "runs" / f"job-{job_id}"


def dispatch(store: Store, device: str) -> Optional[int]:
    """Start a worker for the next queued job of `device` if none runs there; its id, or None."""
    _fail_dead_workers(store)
    job = store.claim_next_job(device)
    if job is None:
        return None
    folder = run_dir(store, job["id"])
    environment = subprocess_environment()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "worker.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "snnet", "job", "--store", str(store.path), "run", str(job["id"])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment,
                start_new_session=True,  # outlives the page's server and ignores its Ctrl-C
            )
    except OSError as error:
        store.update_job(job["id"], status="failed", stage="failed", finished=time.time(),
                         message=f"cannot start the worker process: {error.strerror or error}")
        return dispatch(store, device)
    store.update_job(job["id"], pid=process.pid)
    return job["id"]


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps our own finished child, which would linger as a zombie
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _fail_dead_workers(store: Store) -> None:
    for job in store.list_jobs():
        if job["status"] != "running" or (job["pid"] is None and time.time() - job["started"] < 60):
            continue  # a worker that is still starting has no pid for a moment
        if job["pid"] is None or not _alive(job["pid"]):
            if store.get_job(job["id"])["status"] == "running":  # it may have finished meanwhile
                where = (f"at step {job['step']}/{job['steps']}" if job["kind"] == "finetune"
                         else f"while {job['stage']}")
                store.update_job(job["id"], status="failed", stage="failed", finished=time.time(),
                                 message=f"the worker process stopped unexpectedly {where} "
                                         f"(log: {run_dir(store, job['id']) / 'worker.log'})")


def refresh(store: Store) -> None:
    """Fail the jobs whose worker died (killed, out of memory, a reboot) and start whatever queued
    jobs can now run, so a queue never stalls behind a worker that did not exit cleanly."""
    _fail_dead_workers(store)
    for device in {job["device"] for job in store.list_jobs() if job["status"] == "queued"}:
        dispatch(store, device)


def cancel(store: Store, job_id: int) -> None:
    if store.get_job(job_id) is None:
        raise SnnetError(f"no job {job_id}")
    store.request_cancel(job_id)


def resume(store: Store, job_id: int) -> None:
    """Queue a failed or cancelled job again in its own run folder, and start it if its device is
    free: a fine-tune goes on from its last checkpoint and ends with the weights, and the numbers,
    that an uninterrupted run would have given. The job keeps its id, hence its place in the queue."""
    _fail_dead_workers(store)  # a worker that died a moment ago still reads as running
    job = store.get_job(job_id)
    if job is None:
        raise SnnetError(f"no job {job_id}")
    if not store.requeue_job(job_id):
        raise SnnetError(f"job {job_id} is {store.get_job(job_id)['status']}: only a failed or cancelled job "
                         f"can be resumed")
    dispatch(store, job["device"])


def run_job(job_id: int, store: Store) -> None:
    """The worker: run one claimed job to its end, then start the next one of its device."""
    job = store.get_job(job_id)
    if job is None:
        raise SnnetError(f"no job {job_id}")
    if job["kind"] == "evolve":  # its own spec and work live with the search (snnet/evolve/job.py)
        from snnet.evolve.job import EvolveSpec
        from snnet.evolve.job import work as evolve_work

        spec, work = EvolveSpec.from_json(job["spec"]), evolve_work
    else:
        known = {f.name for f in fields(JobSpec)}
        spec, work = JobSpec(**{k: v for k, v in job["spec"].items() if k in known}), _work
    store.update_job(job_id, pid=os.getpid(), stage="loading the network")
    try:
        result = work(job_id, spec, store)
        store.update_job(job_id, status="done", stage="done", result=result, eta_s=0.0, finished=time.time())
    except Cancelled:
        store.update_job(job_id, status="cancelled", stage="cancelled", finished=time.time())
    except SnnetError as error:
        store.update_job(job_id, status="failed", stage="failed", message=str(error), finished=time.time())
    except Exception as error:  # the page shows one line; the log keeps the traceback
        traceback.print_exc()
        stage = store.get_job(job_id)["stage"] or "starting"
        store.update_job(job_id, status="failed", stage="failed", finished=time.time(), message=_describe(error, spec, stage))
    finally:
        dispatch(store, spec.device)


def _describe(error: Exception, spec, stage: str) -> str:
    if out_of_memory(error) and hasattr(spec, "batch_size"):
        return f"out of memory on {spec.device} while {stage} (batch size {spec.batch_size}): try a smaller batch"
    if out_of_memory(error):
        return f"out of memory on {spec.device} while {stage}"
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line}"


def _work(job_id: int, spec: JobSpec, store: Store) -> dict:
    from snnet.api import load_net, metrics
    from snnet.train import TrainConfig, resolve_device, train
    from snnet.weights import weights_hash

    net = load_net(spec.family, spec.weights, resolve_device(spec.device), official_compat=spec.official_compat)
    ids = spec.stitches if spec.stitches is not None else list(range(len(net.space)))
    before = metrics(net, spec.split, store, compute_missing=False, data=spec.data)
    weights = spec.weights
    if spec.kind == "finetune":
        data = net.family.task.train_data(net.family, spec.seed, spec.data)
        steps = spec.steps if not spec.epochs else max(1, math.ceil(spec.epochs * _epoch_size(data) / spec.batch_size))
        config = TrainConfig(steps=steps, batch_size=spec.batch_size, lr=spec.lr, anchor_lr=spec.anchor_lr,
                             warmup_steps=max(1, min(150, steps // 10)), stitches=spec.stitches,
                             distill=spec.distill, anchor_share=spec.anchor_share, seed=spec.seed, device=spec.device)
        store.update_job(job_id, stage="training", steps=steps)
        out_dir = run_dir(store, job_id)
        train(net, data, config, out_dir, progress=_reporter(job_id, store), show_bar=False)
        weights = str(out_dir / "model.safetensors")
    if store.get_job(job_id)["cancel"]:
        raise Cancelled()
    net.eval()
    preview = _preview(job_id, net, spec, ids, weights, store) if spec.kind == "finetune" else {}
    evaluating = f"evaluating {len(ids)} configuration{'s' * (len(ids) != 1)}"
    store.update_job(job_id, stage=evaluating, eta_s=None)
    after = metrics(net, spec.split, store, stitch_ids=ids, data=spec.data,
                    on_batch=_evaluation_reporter(job_id, store, evaluating))
    return {"weights": weights, "weights_hash": weights_hash(net), "stitches": ids,
            "before": {i: before[i]["top1"] for i in ids if i in before},
            "after": {i: after[i]["top1"] for i in ids}, **preview}


def _preview(job_id: int, net, spec: JobSpec, ids: list[int], weights: str, store: Store) -> dict:
    """The fine-tuned configurations' top-1 on the task's preview set (a tenth of the digits' test
    images), written into the running job's result, so a page can draw them before the exact
    figures are in; {} where the task has no preview set."""
    from snnet.evaluate import evaluate_space

    split = spec.split or net.family.task.default_split
    found = net.family.task.preview_set(net.family, split)
    if found is None:
        return {}
    images, labels = found
    store.update_job(job_id, stage=f"previewing {len(ids)} configuration{'s' * (len(ids) != 1)} on {len(labels)} images",
                     eta_s=None)
    measured = evaluate_space(net, images, labels, ids, batch_size=64)
    preview = {"preview": {i: measured[i]["top1"] for i in ids}, "preview_images": len(labels),
               "eval_images": len(net.family.task.eval_set(net.family, split)[1])}
    store.update_job(job_id, result={"weights": weights, **preview})
    return preview


def _epoch_size(data) -> int:
    epoch = data(0)  # digits: (images, labels) tensors; an image folder: a dataset
    return len(epoch[1]) if isinstance(epoch, tuple) else len(epoch)


def _reporter(job_id: int, store: Store):
    last = [0.0]

    def report(progress) -> None:
        now = time.monotonic()
        if now - last[0] < REPORT_EVERY_S and progress.step < progress.steps:
            return
        last[0] = now
        store.add_progress(job_id, progress.step, progress.loss)
        store.update_job(job_id, step=progress.step, loss=progress.loss, eta_s=progress.eta_s)
        if store.get_job(job_id)["cancel"]:
            raise Cancelled()

    return report


def _evaluation_reporter(job_id: int, store: Store, stage: str):
    started, last = time.monotonic(), [0.0]

    def report(done: int, total: Optional[int]) -> None:
        now = time.monotonic()
        if now - last[0] < REPORT_EVERY_S:
            return
        last[0] = now
        eta = (now - started) / done * (total - done) if done and total else None
        store.update_job(job_id, stage=f"{stage} · batch {done + 1}/{total or '?'}", eta_s=eta)
        if store.get_job(job_id)["cancel"]:
            raise Cancelled()

    return report


def runs(store: Store, family: str) -> list[dict]:
    """Finished fine-tunes of a family, newest first: the weights a page can switch to."""
    return [job for job in store.list_jobs(family) if job["kind"] == "finetune" and job["status"] == "done"]
