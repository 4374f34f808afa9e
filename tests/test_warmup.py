"""The warm-up curve a cold server draws before torch is imported (app/warmup.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

from app.warmup import shipped_rows
from snnet.api import has_weights, load_net, results
from snnet.families import get_family
from snnet.store import Store

ROOT = Path(__file__).resolve().parents[1]
CHART_KEYS = ("id", "kind", "front", "back", "front_block", "back_block", "gmacs", "params_m", "top1", "latency_ms",
              "name")


def test_the_warm_up_module_imports_neither_torch_nor_timm():
    code = "import sys, app.warmup; print(sorted({'torch', 'timm', 'snnet.model'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize("family_name", ["mini", "mini-resnet"])
def test_the_warm_up_rows_are_the_rows_the_page_then_shows(family_name, tmp_path):
    assert has_weights(family_name)
    quick, zoo_name = shipped_rows(family_name)
    page = results(load_net(family_name), store=Store(tmp_path / "store.sqlite"), compute_missing=False)
    assert [{k: r.get(k) for k in CHART_KEYS} for r in quick] == [{k: r.get(k) for k in CHART_KEYS} for r in page]
    assert zoo_name == get_family(family_name).task.zoo_name


def test_a_family_without_a_metrics_file_draws_nothing_early():
    assert shipped_rows("deit") is None
