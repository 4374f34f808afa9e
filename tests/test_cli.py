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
        (["--family", "imagenet"], "error: unknown family 'imagenet': choose from deit, levit, mini, mini-resnet, resnet, resnet-swin, swin"),
        (["--family", "mini", "--kernel", "13"], "error: kernel must be between 1 and the anchors' depth 12, got 13"),
        (["--family", "mini", "--stride", "0"], "error: stride must be at least 1, got 0"),
    ],
)
def test_bad_requests_give_one_line(args, message):
    result = snnet("stitches", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert result.stdout == ""


def test_families_json_lists_every_family():
    result = snnet("families", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"deit", "mini", "swin", "resnet", "resnet-swin", "levit", "mini-resnet"}
    assert {name: row["configurations"] for name, row in rows.items()} == {
        "deit": 71, "mini": 71, "swin": 41, "resnet": 10, "resnet-swin": 8, "levit": 8, "mini-resnet": 23}
    assert rows["mini"]["weights"] is True and rows["mini"]["task"] == "digits"
    assert rows["resnet-swin"]["anchors"] == ["resnet18", "swin_tiny"]
    assert set(rows["deit"]) == {"name", "description", "task", "anchors", "configurations", "weights"}


def test_stitches_json_of_a_stage_wise_family():
    result = snnet("stitches", "--family", "levit", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    # the reference's published figures (tests/test_families.py has every family's)
    assert [round(r["gmacs"] * 1e9) for r in rows] == [661663808, 1133412864, 1020918272, 977741824, 934565376,
                                                       812300576, 791247040, 770193504]
    assert [(r["front_block"], r["back_block"]) for r in rows[2:]] == [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)]
