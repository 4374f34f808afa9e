"""Background jobs: the queue, cancelling, dead workers, and real worker processes end to end."""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snnet import jobs
from snnet.api import load_net
from snnet.data import digits_train_epoch
from snnet.evaluate import evaluate_space
from snnet.store import Store

SHIPPED_TOP1 = {0: 67.41666666666667, 24: 61.44444444444444}  # checkpoints/mini/metrics.json


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store.sqlite")


def _wait(store, job_id, states, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.refresh(store)
        job = store.get_job(job_id)
        if job["status"] in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {store.get_job(job_id)['status']} after {timeout} s")


def test_one_job_runs_per_device_and_the_rest_wait_in_order(store):
    first, second = (store.add_job("finetune", "mini", "cpu", {}) for _ in range(2))
    other_device = store.add_job("finetune", "mini", "cuda:0", {})
    assert store.claim_next_job("cpu")["id"] == first
    assert store.claim_next_job("cpu") is None  # the first still runs
    assert store.claim_next_job("cuda:0")["id"] == other_device
    store.update_job(first, status="done")
    assert store.claim_next_job("cpu")["id"] == second


def test_cancelling_a_queued_job_is_immediate_and_a_running_one_is_flagged(store):
    running, queued = (store.add_job("finetune", "mini", "cpu", {}) for _ in range(2))
    store.claim_next_job("cpu")
    jobs.cancel(store, queued)
    jobs.cancel(store, running)
    assert store.get_job(queued)["status"] == "cancelled"
    assert store.get_job(running)["status"] == "running" and store.get_job(running)["cancel"]


def _running_job_whose_worker_died(store) -> int:
    job_id = store.add_job("finetune", "mini", "cpu", {})
    store.claim_next_job("cpu")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    store.update_job(job_id, pid=process.pid)
    return job_id


def test_a_worker_that_died_fails_its_job_and_frees_the_device(store):
    job_id = _running_job_whose_worker_died(store)
    jobs.refresh(store)
    job = store.get_job(job_id)
    assert job["status"] == "failed" and job["message"].startswith("the worker process stopped unexpectedly")
    waiting = store.add_job("finetune", "mini", "cpu", {})
    assert store.claim_next_job("cpu")["id"] == waiting


def test_a_queue_behind_a_killed_worker_moves_on(store):
    stuck = _running_job_whose_worker_died(store)
    spec = jobs.JobSpec("mini", stitches=[0], steps=0)
    waiting = store.add_job(spec.kind, "mini", "cpu", jobs.asdict(spec))
    jobs.refresh(store)  # what every page run and every `job list` does
    assert store.get_job(stuck)["status"] == "failed"
    assert _wait(store, waiting, {"done", "failed"})["status"] == "done"


def test_bad_requests_are_refused_before_any_process_starts(store):
    with pytest.raises(Exception, match="stitch id 71 is out of range"):
        jobs.submit(jobs.JobSpec("mini", stitches=[0, 71]), store)
    with pytest.raises(Exception, match="weights file /nowhere.safetensors not found"):
        jobs.submit(jobs.JobSpec("mini", weights="/nowhere.safetensors"), store)
    with pytest.raises(Exception, match="distill is a weight between 0 and 1, got 1.5"):
        jobs.submit(jobs.JobSpec("mini", distill=1.5), store)
    with pytest.raises(Exception, match="an anchor share needs anchors and other configurations"):
        jobs.submit(jobs.JobSpec("mini", stitches=[3, 24], anchor_share=0.3), store)
    assert store.list_jobs() == []


def test_a_job_trains_with_the_distillation_and_anchor_share_it_was_given(store):
    job_id = jobs.submit(jobs.JobSpec("mini", stitches=[0, 24], steps=2, batch_size=8, distill=0.5,
                                      anchor_share=0.5), store)
    job = _wait(store, job_id, {"done", "failed"})
    assert job["status"] == "done", job["message"]
    trained = json.loads((Path(job["result"]["weights"]).parent / "train.json").read_text())["config"]
    assert (trained["distill"], trained["anchor_share"], trained["stitches"]) == (0.5, 0.5, [0, 24])


def test_a_tiny_fine_tune_runs_in_its_own_process_and_its_numbers_are_real(store):
    job_id = jobs.submit(jobs.JobSpec("mini", stitches=[0, 24], steps=4, batch_size=16), store)
    job = _wait(store, job_id, {"done", "failed"})
    assert job["status"] == "done", job["message"]
    assert job["step"] == 4 and store.get_progress(job_id)[-1]["step"] == 4
    result = job["result"]
    assert result["before"] == {str(i): top1 for i, top1 in SHIPPED_TOP1.items()}
    net = load_net("mini", result["weights"])  # the weights the job wrote, evaluated here independently
    images, labels = net.family.task.eval_set(net.family, "test")
    measured = evaluate_space(net, images, labels, [0, 24])
    assert result["after"] == {str(i): measured[i]["top1"] for i in (0, 24)}
    assert result["after"] != result["before"]
    # the preview the page drew before the exact figures: one render of each of the 360 test digits
    assert (result["preview_images"], result["eval_images"]) == (360, 3600)
    previewed = evaluate_space(net, images[:360], labels[:360], [0, 24])
    assert result["preview"] == {str(i): previewed[i]["top1"] for i in (0, 24)}


def test_a_length_in_epochs_becomes_steps_over_the_training_data(store):
    job_id = jobs.submit(jobs.JobSpec("mini", stitches=[0], epochs=0.02, batch_size=64), store)
    job = _wait(store, job_id, {"done", "failed"})
    assert job["status"] == "done", job["message"]
    epoch = len(digits_train_epoch(0)[1])  # 10 renders of the 1257 training digits
    assert job["steps"] == job["step"] == math.ceil(0.02 * epoch / 64)


def test_a_failing_job_says_why_in_one_line_and_the_queue_goes_on(store, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    failing = jobs.submit(jobs.JobSpec("mini", weights=str(broken), steps=2, batch_size=8), store)
    following = jobs.submit(jobs.JobSpec("mini", stitches=[0], steps=0), store)
    job = _wait(store, failing, {"done", "failed"})
    assert job["status"] == "failed" and "is not a readable safetensors file" in job["message"]
    assert "\n" not in job["message"]
    assert _wait(store, following, {"done", "failed"})["status"] == "done"


@pytest.mark.slow
def test_a_running_job_stops_when_cancelled(store):
    job_id = jobs.submit(jobs.JobSpec("mini", steps=5000, batch_size=16), store)
    deadline = time.monotonic() + 120
    while store.get_job(job_id)["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    jobs.cancel(store, job_id)
    job = _wait(store, job_id, {"cancelled", "failed", "done"}, timeout=60)
    assert job["status"] == "cancelled" and job["step"] < 5000


@pytest.mark.slow
def test_an_evaluation_stops_when_cancelled_and_reports_its_batches(store):
    # the official-compat path has no cached figures, so all 71 configurations are evaluated
    job_id = jobs.submit(jobs.JobSpec("mini", steps=0, official_compat=True), store)
    deadline = time.monotonic() + 120
    while "· batch" not in (store.get_job(job_id)["stage"] or "") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.get_job(job_id)["stage"].startswith("evaluating 71 configurations · batch ")
    jobs.cancel(store, job_id)
    assert _wait(store, job_id, {"cancelled", "failed", "done"}, timeout=60)["status"] == "cancelled"


def test_two_fine_tunes_submitted_at_once_take_turns_on_one_device(store):
    spec = jobs.JobSpec("mini", stitches=[0], steps=3, batch_size=8)
    first, second = jobs.submit(spec, store), jobs.submit(spec, store)
    done = [_wait(store, job_id, {"done", "failed"}) for job_id in (first, second)]
    assert [job["status"] for job in done] == ["done", "done"], [job["message"] for job in done]
    assert done[0]["started"] < done[0]["finished"] <= done[1]["started"] < done[1]["finished"]


def test_a_job_out_of_memory_says_try_a_smaller_batch_and_the_queue_goes_on(store, monkeypatch):
    monkeypatch.setenv("SNNET_FAULT", "oom:2")  # the worker fails as an allocator would at step 2's checkpoint
    failing = jobs.submit(jobs.JobSpec("mini", stitches=[0], steps=2, batch_size=8), store)
    monkeypatch.delenv("SNNET_FAULT")
    following = jobs.submit(jobs.JobSpec("mini", stitches=[0], steps=0), store)
    job = _wait(store, failing, {"done", "failed"})
    assert job["status"] == "failed"
    assert job["message"] == "out of memory on cpu while training (batch size 8): try a smaller batch"
    assert _wait(store, following, {"done", "failed"})["status"] == "done"


def test_scripts_submit_and_list_jobs_as_json(store, capsys):
    from snnet.cli import main

    assert main(["job", "--store", str(store.path), "submit", "--family", "mini", "--stitches", "0", "--steps", "0",
                 "--json"]) == 0
    job_id = json.loads(capsys.readouterr().out)["id"]
    assert store.get_job(job_id)["kind"] == "evaluate"
    _wait(store, job_id, {"done", "failed"})
    assert main(["job", "--store", str(store.path), "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert {"id", "kind", "status", "step", "steps", "pid", "message", "weights_hash"} <= set(listed)
    assert (listed["id"], listed["status"], listed["message"]) == (job_id, "done", None)
    assert listed["weights_hash"] == store.get_job(job_id)["result"]["weights_hash"]
    assert main(["job", "--store", str(store.path), "resume", str(job_id)]) == 2
    assert capsys.readouterr().err == f"error: job {job_id} is done: only a failed or cancelled job can be resumed\n"


def test_a_failed_job_resumes_from_the_command_line(store, capsys):
    from snnet.cli import main

    spec = jobs.JobSpec("mini", stitches=[0], steps=0)
    job_id = store.add_job(spec.kind, "mini", "cpu", jobs.asdict(spec))
    store.claim_next_job("cpu")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    store.update_job(job_id, pid=process.pid, stage="evaluating 1 configuration · batch 3/15")
    assert main(["job", "--store", str(store.path), "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["status"] == "failed" and "weights_hash" not in listed
    assert listed["message"].startswith("the worker process stopped unexpectedly while evaluating 1 configuration "
                                        "· batch 3/15 (log: ")
    assert main(["job", "--store", str(store.path), "resume", str(job_id)]) == 0
    assert capsys.readouterr().out == f"job {job_id} queued again\n"
    assert _wait(store, job_id, {"done", "failed"})["status"] == "done"


def _allocators_of_a_started_process(env) -> bool:
    code = "import torch; torch.randn(512, 512) @ torch.randn(512, 512); print(open('/proc/self/maps').read())"
    maps = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return "tcmalloc" in maps


@pytest.mark.skipif(jobs.faster_allocator() is None, reason="libtcmalloc-minimal4 is not installed (.ci/run installs it)")
def test_processes_snnet_starts_allocate_through_tcmalloc_unless_told_otherwise(monkeypatch):
    assert _allocators_of_a_started_process(jobs.subprocess_environment())
    assert not _allocators_of_a_started_process(jobs.subprocess_environment(allocator=False))
    monkeypatch.setenv("SNNET_ALLOCATOR", "system")
    jobs.faster_allocator.cache_clear()
    try:
        assert not _allocators_of_a_started_process(jobs.subprocess_environment())
    finally:
        jobs.faster_allocator.cache_clear()
