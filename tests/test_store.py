import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import torch

from snnet import api
from snnet.model import StitchableNet
from snnet.store import Store, settings_key

ROOT = Path(__file__).resolve().parents[1]


def test_metrics_round_trip_and_keys(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    settings = settings_key(split="test", kernel=2)
    store.put_metrics("mini", "abc", "test", settings, {3: {"top1": 50.0, "top5": 90.0, "loss": 1.0, "latency_ms": 2.0}})
    assert store.get_metrics("mini", "abc", "test", settings) == {
        3: {"top1": 50.0, "top5": 90.0, "loss": 1.0, "latency_ms": 2.0}}
    assert store.get_metrics("mini", "abd", "test", settings) == {}
    assert store.get_metrics("mini", "abc", "test", settings_key(split="test", kernel=3)) == {}
    assert settings_key(a=1, b=2) == settings_key(b=2, a=1)


def _writer(path, rounds):
    store = Store(path)
    for i in range(rounds):
        store.put_metrics("mini", f"w{i}", "test", "s", {j: {"top1": float(j)} for j in range(71)})


def test_readers_beside_a_writer(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path)
    writer = multiprocessing.get_context("spawn").Process(target=_writer, args=(path, 40))
    writer.start()
    reader = Store(path)
    seen = set()
    while writer.is_alive():
        for i in range(40):
            rows = reader.get_metrics("mini", f"w{i}", "test", "s")
            assert len(rows) in (0, 71)  # a write is seen whole or not at all
            if rows:
                seen.add(i)
    writer.join()
    assert writer.exitcode == 0
    assert len(reader.get_metrics("mini", "w39", "test", "s")) == 71


def test_changed_weights_never_get_stale_numbers(mini, tmp_path, monkeypatch):
    images, labels = torch.randn(24, *mini.input_size), torch.randint(0, 10, (24,))
    monkeypatch.setattr(mini.task, "eval_set", lambda family, split: (images, labels))
    monkeypatch.setattr(api, "_shipped_metrics", lambda family: None)
    store = Store(tmp_path / "s.sqlite")
    net = StitchableNet.from_family(mini).eval()
    first = api.metrics(net, "test", store)
    assert api.metrics(net, "test", store, compute_missing=False) == first  # cached
    with torch.no_grad():
        net.anchors[2].head.weight.add_(torch.randn_like(net.anchors[2].head.weight))
    assert api.metrics(net, "test", store, compute_missing=False) == {}
    second = api.metrics(net, "test", store)
    assert second[2]["loss"] != first[2]["loss"] and second[0]["loss"] == first[0]["loss"]


WRITER = """
import sys
from snnet.store import Store
store = Store(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.put_metrics("mini", f"w{i}", "test", "s", {j: {"top1": float(j)} for j in range(71)})
"""
READER = """
import json, sys, time
from snnet.store import Store
store, keys, deadline = Store(sys.argv[1]), int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
seen = set()
print("ready", flush=True)
while time.monotonic() < deadline:
    counts = [len(store.get_metrics("mini", f"w{i}", "test", "s")) for i in range(keys)]
    seen.update(counts)
    if counts[-1] == 71:
        break
print(json.dumps(sorted(seen)))
"""


def test_a_reader_process_never_sees_part_of_a_commit(tmp_path):
    path, keys = tmp_path / "s.sqlite", 60
    Store(path)
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), str(keys), "60"], env=environment,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline() == "ready\n"  # it polls before the first write
    writer = subprocess.run([sys.executable, "-c", WRITER, str(path), str(keys)], env=environment, timeout=60)
    seen = json.loads(reader.communicate(timeout=90)[0])
    assert writer.returncode == 0 and reader.returncode == 0
    assert seen == [0, 71]  # each key empty, then whole: never in between, and the reader did see writes land
