"""The benchmark runs on a small setting and its identity check holds (its figures are not tested)."""
import json

from snnet import bench
from snnet.cli import main


def test_the_quick_bench_runs_and_all_configurations_at_once_predict_as_each_alone(capsys):
    assert main(["bench", "--quick", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    mini = figures["mini"]
    assert figures["allstitch_identical"] is True and mini["identical"] is True and mini["max_abs_diff"] < 1e-4
    assert mini["configurations"] == 71 and mini["engine_s"] > 0 and mini["loop_s"] > 0
    assert 1.2 < mini["flops_bound"] < 1.35  # mini's prefix sharing saves about a fifth of the FLOPs
    assert figures["matmul_peak_gflops"] > 0


def test_the_report_keeps_the_sections_kept_by_hand(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# old figures\n\n{bench.HAND_KEPT}\n\n## Load test\n\nby hand\n")
    bench.write_report("# Benchmarks\n\nnew figures", path)
    assert path.read_text() == f"# Benchmarks\n\nnew figures\n\n{bench.HAND_KEPT}\n\n## Load test\n\nby hand\n"
    fresh = tmp_path / "new.md"
    bench.write_report("# Benchmarks", fresh)
    assert fresh.read_text() == f"# Benchmarks\n\n{bench.HAND_KEPT}\n"


def test_the_memory_figures_spread_their_configurations_and_keep_the_largest_anchor():
    from snnet.families import get_family

    space = get_family("deit").space()
    eight = bench.spread_configurations(space, 8)
    assert len({config.id for config in eight}) == 8
    assert [config.id for config in eight if config.kind == "anchor"] == [0, 1, 2]
    assert {config.front for config in eight if config.kind != "anchor"} == {0, 1}  # both pairs stitched
    assert [config.id for config in bench.spread_configurations(space, 1)] == [2]  # deit-b
