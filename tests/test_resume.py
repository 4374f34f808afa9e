"""Crash safety: workers killed at random moments (loading, training, mid-checkpoint, evaluating,
writing metrics) leave a store that opens, whole evaluations, a checkpoint that loads, and a job
that resumes to the very weights and numbers of an uninterrupted run."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Optional

import pytest
import torch

from snnet import jobs
from snnet.errors import SnnetError
from snnet.store import Store
from snnet.train import TrainConfig, train
from snnet.weights import read_weights

ROOT = Path(__file__).resolve().parents[1]
# checkpoints at steps 50, 100 and 120 (TrainConfig's every 50 steps, and the last)
SPEC = jobs.JobSpec("mini", stitches=[0, 24, 40], steps=120, batch_size=16, seed=3)
CONFIGURATIONS = 71  # the mini family's space: the shipped metrics hold them all


def _until(store, job_id, condition, timeout=300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if condition(job):
            return job
        if job["status"] in ("done", "failed", "cancelled"):
            raise AssertionError(f"job {job_id} ended {job['status']} early: {job['message']}")
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {store.get_job(job_id)}")


def _failed(store, job_id, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.refresh(store)  # what a page does: it notices the dead worker
        job = store.get_job(job_id)
        if job["status"] == "failed":
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {store.get_job(job_id)['status']} after {timeout} s")


def _done(store, job_id, timeout=600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.refresh(store)
        job = store.get_job(job_id)
        if job["status"] in ("done", "failed", "cancelled"):
            assert job["status"] == "done", job["message"]
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {store.get_job(job_id)['status']} after {timeout} s")


def _checkpoint_step(store, job_id) -> Optional[int]:
    path = jobs.run_dir(store, job_id) / "checkpoint.pt"
    return torch.load(path, weights_only=True)["step"] if path.exists() else None


def _resumes(store, job_id) -> list[int]:
    """The steps the job's runs went on from, as its worker log tells."""
    log = (jobs.run_dir(store, job_id) / "worker.log").read_text()
    return [int(line.split()[3]) for line in log.splitlines() if line.startswith("resuming at step ")]


def _evaluations_are_whole(path: Path, sizes: set[int]) -> None:
    with closing(sqlite3.connect(path)) as connection:
        counts = [n for (n,) in connection.execute(
            "SELECT COUNT(*) FROM metrics GROUP BY family, weights, split, settings")]
    assert set(counts) <= sizes, counts


@pytest.mark.slow
def test_a_job_killed_at_random_moments_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    # the reference and the killed job run side by side, one core each
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("SNNET_FAULT", raising=False)
    reference_store = Store(tmp_path / "reference" / "store.sqlite")
    reference_id = jobs.submit(SPEC, reference_store)

    store = Store(tmp_path / "killed" / "store.sqlite")
    rng = random.Random(20240611)
    moments = [("loading", None), ("training", (5, 45)), ("checkpoint", 100), ("training", (102, 116)),
               ("loading", None), ("evaluating", None)]
    job_id = checkpoint = None
    for where, argument in moments:
        if where == "checkpoint":
            monkeypatch.setenv("SNNET_FAULT", f"kill:{argument}")
        if job_id is None:
            job_id = jobs.submit(SPEC, store)
        else:
            checkpoint, resumes = _checkpoint_step(store, job_id), _resumes(store, job_id)
            jobs.resume(store, job_id)
        monkeypatch.delenv("SNNET_FAULT", raising=False)  # the worker has it; the next ones must not
        reached = store.get_job(job_id)["step"]
        if where == "loading":
            _until(store, job_id, lambda j: j["stage"] == "loading the network")
            time.sleep(rng.uniform(0.0, 0.3))
        elif where == "training":
            target = rng.randint(*argument)
            _until(store, job_id, lambda j: j["step"] >= target)
        elif where == "evaluating":
            _until(store, job_id, lambda j: (j["stage"] or "").startswith("evaluating"))
            time.sleep(rng.uniform(0.2, 2.0))
        if where != "checkpoint":  # that one kills itself
            killed = store.get_job(job_id)
            os.kill(killed["pid"], signal.SIGKILL)
            assert killed["status"] == "running", killed
            stage = killed["stage"] or ""
            assert {"loading": killed["step"] == reached, "training": stage == "training",
                    "evaluating": stage.startswith("evaluating")}[where], (where, killed)
        job = _failed(Store(store.path), job_id)  # the store opens after the kill
        assert job["message"] == (f"the worker process stopped unexpectedly at step {job['step']}/{SPEC.steps} "
                                  f"(log: {jobs.run_dir(store, job_id) / 'worker.log'})")
        if where == "loading":
            assert job["step"] == reached  # no training step was taken
        _evaluations_are_whole(store.path, {CONFIGURATIONS, len(SPEC.stitches)})
        folder = jobs.run_dir(store, job_id)
        if (folder / "checkpoint.pt").exists():
            assert 0 < torch.load(folder / "checkpoint.pt", weights_only=True)["step"] <= SPEC.steps
        if where == "checkpoint":
            assert (folder / "checkpoint.tmp").exists()  # it died between writing and replacing
            assert torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 50
        if checkpoint and where != "loading":  # a run that trained went on from the last checkpoint
            assert _resumes(store, job_id)[len(resumes):] == [checkpoint]
    assert store.get_job(job_id)["step"] == SPEC.steps  # the last kill came while evaluating

    resumes = _resumes(store, job_id)
    jobs.resume(store, job_id)
    resumed, reference = _done(store, job_id), _done(reference_store, reference_id)
    assert _resumes(store, job_id)[len(resumes):] == [SPEC.steps]  # it only evaluated
    assert resumed["result"]["weights_hash"] == reference["result"]["weights_hash"]
    assert resumed["result"]["after"] == reference["result"]["after"]
    assert resumed["result"]["before"] == reference["result"]["before"]
    ours, theirs = read_weights(resumed["result"]["weights"]), read_weights(reference["result"]["weights"])
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    _evaluations_are_whole(store.path, {CONFIGURATIONS, len(SPEC.stitches)})


WRITER = """
import sys
from snnet.store import Store
store = Store(sys.argv[1])
for i in range(100000):
    store.put_metrics("mini", f"w{i}", "test", "s", {j: {"top1": float(j)} for j in range(71)})
"""


def _until_more_rows(path: Path, timeout=30.0) -> None:
    with closing(sqlite3.connect(path)) as connection:
        count = lambda: connection.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]  # noqa: E731
        before, deadline = count(), time.monotonic() + timeout
        while count() == before:
            assert time.monotonic() < deadline, "the writer wrote nothing"
            time.sleep(0.01)


def test_a_writer_killed_mid_commit_leaves_whole_evaluations(tmp_path):
    path = tmp_path / "store.sqlite"
    Store(path)
    rng = random.Random(7)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=environment)
        _until_more_rows(path)
        time.sleep(rng.uniform(0.0, 0.2))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        _evaluations_are_whole(path, {71})
    assert len(Store(path).get_metrics("mini", "w0", "test", "s")) == 71


def test_only_a_failed_or_cancelled_job_can_be_resumed(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    done = store.add_job("finetune", "mini", "nowhere", {})
    store.update_job(done, status="done")
    with pytest.raises(SnnetError, match=f"^job {done} is done: only a failed or cancelled job can be resumed$"):
        jobs.resume(store, done)
    with pytest.raises(SnnetError, match="^no job 99$"):
        jobs.resume(store, 99)
    failed = store.add_job("finetune", "mini", "nowhere", {})
    store.update_job(failed, status="failed", message="boom", finished=1.0)
    assert store.requeue_job(failed) and not store.requeue_job(failed)  # two clicks queue it once
    job = store.get_job(failed)
    assert (job["status"], job["message"], job["finished"], job["cancel"]) == ("queued", None, None, False)


class _Jittered(torch.utils.data.Dataset):
    """Images with noise and flips drawn from both sources timm's training transforms draw from."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index] + 0.1 * torch.randn(self.images[index].shape)
        return (image.flip(-1) if random.random() < 0.5 else image), self.labels[index]


@pytest.mark.parametrize("workers", [0, 2])
def test_random_transforms_of_an_image_folder_resume_to_the_same_weights(mini, tmp_path, workers):
    images, labels = torch.randn(48, *mini.input_size), torch.randint(0, 10, (48,))
    data = lambda epoch: _Jittered(images, labels)  # noqa: E731
    config = TrainConfig(steps=8, batch_size=16, warmup_steps=1, checkpoint_every=2, device="cpu", bf16=False,
                         workers=workers)

    def model():
        torch.manual_seed(0)
        return mini.build_model(mini.model_spec("mini_tiny"))

    def crash(progress):
        if progress.step == 5:  # mid-epoch: three batches an epoch, the last checkpoint at step 4
            raise KeyboardInterrupt

    train(model(), data, config, tmp_path / "straight", show_bar=False)
    with pytest.raises(KeyboardInterrupt):
        train(model(), data, config, tmp_path / "resumed", progress=crash, show_bar=False)
    random.seed(12345)  # whatever state the process is in, the resumed run reads the same images
    torch.manual_seed(12345)
    train(model(), data, config, tmp_path / "resumed", show_bar=False)
    straight, resumed = (read_weights(tmp_path / name / "model.safetensors") for name in ("straight", "resumed"))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_checkpoint_comes_every_so_many_steps_or_seconds(mini, tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr("snnet.train._save_checkpoint", lambda *args: saved.append(args[3]))
    images, labels = torch.randn(32, *mini.input_size), torch.randint(0, 10, (32,))
    base = dict(steps=7, batch_size=8, warmup_steps=1, device="cpu", bf16=False)
    torch.manual_seed(0)
    train(mini.build_model(mini.model_spec("mini_tiny")), lambda e: (images, labels),
          TrainConfig(**base, checkpoint_every=3), tmp_path / "steps", show_bar=False)
    assert saved == [3, 6, 7]
    saved.clear()
    train(mini.build_model(mini.model_spec("mini_tiny")), lambda e: (images, labels),
          TrainConfig(**base, checkpoint_every=1000, checkpoint_every_s=0.0), tmp_path / "seconds", show_bar=False)
    assert saved == [1, 2, 3, 4, 5, 6, 7]
    assert (TrainConfig().checkpoint_every, TrainConfig().checkpoint_every_s) == (50, 30.0)
