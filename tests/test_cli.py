import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def snnet(*args):
    return subprocess.run([sys.executable, "-m", "snnet", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_stitches_json_is_the_reference_space():
    result = snnet("stitches", "--family", "deit", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 71
    assert set(rows[0]) == {"id", "kind", "front", "back", "front_block", "back_block", "layer", "gmacs", "params_m"}
    assert [r["kind"] for r in rows] == ["anchor"] * 3 + ["stitch"] * 68
    assert rows[1] == {"id": 1, "kind": "anchor", "front": "deit_small", "back": "deit_small",
                       "front_block": None, "back_block": None, "layer": None,
                       "gmacs": pytest.approx(4.608, abs=5e-4), "params_m": pytest.approx(22.05, abs=5e-3)}
    assert rows[24]["front"] == "deit_tiny" and rows[24]["back"] == "deit_small"
    assert (rows[24]["front_block"], rows[24]["back_block"], rows[24]["layer"]) == (7, 7, 6)
    assert round(rows[24]["gmacs"], 3) == 2.759
    assert rows[70]["layer"] == 21


def test_stitches_table_and_options():
    result = snnet("stitches", "--family", "mini", "--kernel", "3", "--stride", "3", "--direction", "slow-to-fast")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "GMACs" in lines[0]
    # 4 windows of 9 positions per pair, 2 pairs, plus 3 anchors
    assert len(lines) == 2 + 3 + 2 * 4 * 9
    assert "mini_small" in lines[5] and "mini_tiny" in lines[5]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--family", "imagenet"], "error: unknown family 'imagenet': choose from deit, levit, mini, resnet, resnet-swin, swin"),
        (["--family", "mini", "--kernel", "13"], "error: kernel must be between 1 and the anchors' depth 12, got 13"),
        (["--family", "mini", "--stride", "0"], "error: stride must be at least 1, got 0"),
    ],
)
def test_bad_requests_give_one_line(args, message):
    result = snnet("stitches", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert result.stdout == ""
