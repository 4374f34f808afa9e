"""python -m snnet bench: the speed and fit figures behind BENCHMARKS.md, measured in one run.

These machines are noisy, so every target is a ratio between quantities measured together: the
all-configuration engine against the per-stitch loop on the same images, executed FLOPs against a
large matmul timed in the same run, per-piece costing against tracing every configuration.
`run()` returns the report as markdown and the figures as one dict (`--json`).
"""
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import torch

from snnet import cost
from snnet.families import get_family
from snnet.jobs import PROJECT_ROOT, faster_allocator, subprocess_environment
from snnet.model import StitchableNet
from snnet.stitching import collect_statistics, load_solutions, relative_residuals, solve_layers
from snnet.store import Store


def _seconds(fn: Callable, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The best rate of a size x size fp32 matmul: the machine's practical peak, now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b, repeat=3) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


@torch.inference_mode()
def bench_allstitch(family_name: str, images: int, batch: int, compiled: bool = True) -> dict:
    """Every configuration on the same images: each alone (the per-stitch loop), then all at once
    through StitchableNet.run (shared prefixes); their predictions must agree. The matmul peak the
    fractions refer to is the better of one measured just before and one just after."""
    family = get_family(family_name)
    torch.manual_seed(0)
    net = StitchableNet.from_family(family).eval()
    x = torch.randn(images, *family.input_size)
    configs = list(net.space)
    net(x[:batch], stitch=configs[-1].id)  # warm-up
    peak_before = matmul_peak_gflops()
    start = time.perf_counter()
    alone = {c.id: torch.cat([net(part, stitch=c.id) for part in x.split(batch)]) for c in configs}
    loop_s = time.perf_counter() - start
    engine_s, shared = _all_at_once(net, x, batch, configs)
    peak_gflops = max(peak_before, matmul_peak_gflops())
    anchors = cost.anchor_costs(family)
    loop_macs = sum(cost.config_cost(anchors, c).macs for c in configs) * images
    engine_macs = cost.ensemble_cost(anchors, configs).macs * images
    figures = {
        "family": family_name, "configurations": len(configs), "images": images, "batch": batch,
        "matmul_peak_gflops": peak_gflops,
        "loop_s": loop_s, "engine_s": engine_s, "speedup": loop_s / engine_s,
        "flops_bound": loop_macs / engine_macs,
        "identical": all(torch.equal(alone[i].argmax(1), shared[i].argmax(1)) for i in alone),
        "max_abs_diff": max(float((alone[i] - shared[i]).abs().max()) for i in alone),
        "loop_peak_fraction": 2 * loop_macs / loop_s / 1e9 / peak_gflops,
        "peak_fraction": 2 * engine_macs / engine_s / 1e9 / peak_gflops,
    }
    if not compiled:
        return figures
    with net.compiled():
        start = time.perf_counter()
        net.run(x[:batch], configs)  # compiles every block for this part size
        compile_s = time.perf_counter() - start
        compiled_s, after_compiling = _all_at_once(net, x, batch, configs)
    compiled_peak = max(peak_gflops, matmul_peak_gflops())
    return {**figures,  # the same engine with its blocks compiled by torch.compile, the compiling itself apart
            "compile_s": compile_s, "compiled_s": compiled_s, "compiled_speedup": loop_s / compiled_s,
            "compiled_identical": all(torch.equal(alone[i].argmax(1), after_compiling[i].argmax(1)) for i in alone),
            "compiled_peak_fraction": 2 * engine_macs / compiled_s / 1e9 / compiled_peak}


def _all_at_once(net: StitchableNet, x: torch.Tensor, batch: int, configs: list) -> tuple[float, dict]:
    """Seconds for every configuration on `x` through one shared run per batch, and their logits."""
    outputs = {c.id: [] for c in configs}
    start = time.perf_counter()
    for part in x.split(batch):
        net.run(part, configs, lambda config, logits: outputs[config.id].append(logits))
    seconds = time.perf_counter() - start
    return seconds, {i: torch.cat(parts) for i, parts in outputs.items()}


def _peak_rss_mb(family_name: str, configurations: int, images: int, allocator: bool = True) -> float:
    """Peak resident memory, above the built network, of a fresh process that runs that many
    configurations at once, started as snnet starts its job workers (`allocator=False`: with
    glibc's malloc). Linux: the peak is reset once the network is built."""
    code = (f"from snnet.bench import run_configurations; "
            f"print(run_configurations({family_name!r}, {configurations}, {images}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_environment(allocator), check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _resident_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in MB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def spread_configurations(space, count: int) -> list:
    """`count` configurations of a space: the anchors (the largest among them), then stitches
    evenly spaced over the rest."""
    anchors = [config for config in space if config.kind == "anchor"]
    stitches = [config for config in space if config.kind != "anchor"]
    if count <= len(anchors):
        return anchors[-count:]
    step = len(stitches) / (count - len(anchors))
    return anchors + [stitches[int(i * step)] for i in range(count - len(anchors))]


@torch.no_grad()
def run_configurations(family_name: str, configurations: int, images: int) -> float:
    """`configurations` of a family's space (spread_configurations) through StitchableNet.run, on
    one batch; the peak resident memory while they ran, less what the process held before."""
    torch.manual_seed(0)
    family = get_family(family_name)
    net = StitchableNet.from_family(family).eval()
    configs = spread_configurations(net.space, configurations)
    data = torch.randn(images, *family.input_size)
    net.run(data[:2], configs, lambda config, logits: None)  # warm-up: what any run allocates once
    before = _resident_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    net.run(data, configs, lambda config, logits: None)
    return _resident_mb("VmHWM") - before


def bench_cost() -> dict:
    """Costing the deit space: each anchor's distinct pieces traced once and summed per
    configuration, against an fvcore trace of every configuration, on the same built anchors."""
    family = get_family("deit")
    space = family.space()
    net = StitchableNet.from_family(family).eval()
    pieces_s = _seconds(lambda: cost.measure_anchors(family, net))
    measured = cost.measure_anchors(family, net)
    sum_s = _seconds(lambda: [cost.config_cost(measured, c) for c in space], repeat=20)
    full_s = _seconds(lambda: [cost.trace_config_macs(net, c.id) for c in space])
    with tempfile.TemporaryDirectory(prefix="snnet-bench-") as folder:
        store = Store(Path(folder) / "store.sqlite")
        store.put_costs(cost.architecture_key(family), family.name, [asdict(piece) for piece in measured])

        def from_store() -> None:
            cost._ANCHOR_COSTS.pop(family.name, None)  # as in a new process
            cost.anchor_costs(family, store)

        kept_s = _seconds(from_store, repeat=5)
    return {"pieces_s": pieces_s, "sum_s": sum_s, "full_trace_s": full_s, "kept_s": kept_s,
            "speedup": full_s / (pieces_s + sum_s), "speedup_kept": full_s / (kept_s + sum_s)}


def bench_least_squares(images: int = 100, batch: int = 50) -> dict:
    family = get_family("deit")
    torch.manual_seed(0)
    net = StitchableNet.from_family(family).eval()
    batches = list(torch.randn(images, *family.input_size).split(batch))
    with torch.no_grad():
        forward_s = _seconds(lambda: [net.block_tokens(a, x) for x in batches for a in range(len(net.anchors))])
    start = time.perf_counter()
    stats = collect_statistics(net, batches)
    collect_s = time.perf_counter() - start
    solve_s = _seconds(lambda: solve_layers(net, stats, "joint"))
    return {"images": images, "layers": net.space.num_layers, "forward_s": forward_s, "collect_s": collect_s,
            "solve_s": solve_s}


def bench_rules() -> Optional[dict]:
    """Joint versus mean on the mini anchors trained alone (shipped in checkpoints/mini/zoo)."""
    from snnet.api import shipped_dir
    from snnet.data import digits_eval_set, digits_split
    from snnet.evaluate import evaluate_space
    from snnet.weights import load_weights

    family = get_family("mini")
    zoo = shipped_dir("mini") / "zoo"
    if not all((zoo / f"{spec.name}.safetensors").exists() for spec in family.anchors):
        return None
    net = StitchableNet.from_family(family).eval()
    for index, spec in enumerate(family.anchors):
        load_weights(net.anchors[index], zoo / f"{spec.name}.safetensors")
    train_images, _ = digits_split("train", 1, seed=777)
    fit = collect_statistics(net, train_images[:256].split(64))
    held_out = collect_statistics(net, train_images[256:512].split(64))
    images, labels = digits_eval_set("val")
    rules = {}
    for rule in ("joint", "mean"):
        solutions = solve_layers(net, fit, rule)
        load_solutions(net, solutions)
        fitted = relative_residuals(net, fit, solutions)
        unseen = relative_residuals(net, held_out, solutions)
        top1 = [r["top1"] for i, r in evaluate_space(net, images, labels).items() if net.space[i].kind == "stitch"]
        rules[rule] = {"fit": sum(fitted.values()) / len(fitted), "held_out": sum(unseen.values()) / len(unseen),
                       "mean_top1": sum(top1) / len(top1), "worst_top1": min(top1)}
    return rules


def bench_switching() -> dict:
    family = get_family("mini")
    net = StitchableNet.from_family(family).eval()
    x = torch.randn(1, *family.input_size)
    ids = [c.id for c in net.space]
    switch_s = _seconds(lambda: [net.set_stitch(i) for i in ids], repeat=100) / len(ids)
    with torch.no_grad():
        forward_s = _seconds(lambda: net(x, stitch=24), repeat=50)
    return {"switch_us": switch_s * 1e6, "forward_ms": forward_s * 1e3}


def bench_training(steps: int, batch: int) -> dict:
    """Images per second of SN-Net training on mini (one sampled configuration per step) and of
    its largest anchor trained alone, on the same batches."""
    from snnet.train import TrainConfig, train

    family = get_family("mini")
    data = family.task.train_data(family, 0)
    config = TrainConfig(steps=steps, batch_size=batch, warmup_steps=1, device="cpu", checkpoint_every=10 ** 9,
                         checkpoint_every_s=1e9)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="snnet-bench-") as folder:
        for name, model in (("snnet", StitchableNet.from_family(family)),
                            ("largest_anchor", family.build_anchor(len(family.anchors) - 1))):
            start = time.perf_counter()
            train(model, data, config, Path(folder) / name, show_bar=False)
            rates[name] = steps * batch / (time.perf_counter() - start)
    return rates


def bench_finetune_to_curve(steps: int) -> dict:
    """Door to door: a fine-tune of every mini configuration submitted as a job, until its figures
    are in the store; split into start-up, training and evaluation by the job's own stages."""
    from snnet import jobs

    with tempfile.TemporaryDirectory(prefix="snnet-bench-") as folder:
        store = Store(Path(folder) / "store.sqlite")
        submitted = time.monotonic()
        job_id = jobs.submit(jobs.JobSpec("mini", steps=steps), store)
        seen = {}
        while True:
            job = store.get_job(job_id)
            stage = (job["stage"] or "").split(" ")[0]
            seen.setdefault(stage, time.monotonic())
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        done = time.monotonic()
        if job["status"] != "done":
            raise RuntimeError(f"the fine-tune job ended {job['status']}: {job['message']}")
    training, evaluating = seen.get("training", done), seen.get("evaluating", done)
    previewing = seen.get("previewing", evaluating)
    return {"steps": steps, "total_s": done - submitted, "startup_s": training - submitted,
            "training_s": previewing - training, "preview_s": evaluating - previewing,
            "evaluation_s": done - evaluating, "preview_on_curve_s": evaluating - submitted}


BARE_PAGE = """import plotly.graph_objects as go
import streamlit as st

st.plotly_chart(go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], mode="markers")))
"""
CHART_POINT = ".js-plotly-plot .scatterlayer .point"
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def bench_app_start(chromium: str = "/usr/bin/chromium") -> Optional[dict]:
    """Seconds from `streamlit run` until headless Chromium shows the first chart: a bare page with
    one plotly chart, the app on a new store (its first start traces the anchor costs), and the
    app again on that store (every later start). The app's first chart is the warm-up curve
    (app/warmup.py); the seconds until its Explorer tab is drawn are measured too. None without
    playwright (requirements-dev.txt) or Chromium."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        return None
    if not Path(chromium).exists():
        return None
    with tempfile.TemporaryDirectory(prefix="snnet-bench-") as folder, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        bare = Path(folder) / "bare.py"
        bare.write_text(BARE_PAGE)
        home = Path(folder) / "home"
        home.mkdir()

        pages = []  # seconds until the app's own page (its Explorer tab) is drawn

        def first_chart_s(script: Path) -> float:
            port = 8700 + os.getpid() % 200
            started = time.monotonic()
            server = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true", "--server.address",
                 "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                cwd=PROJECT_ROOT, env={**os.environ, "SNNET_HOME": str(home)}, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            page = browser.new_page()
            try:
                while True:
                    try:
                        page.goto(f"http://127.0.0.1:{port}")
                        break
                    except Error:  # not listening yet
                        time.sleep(0.05)
                page.wait_for_selector(CHART_POINT, timeout=300_000)
                chart_s = time.monotonic() - started
                if script.name == "streamlit_app.py":
                    page.get_by_role("tab", name="Explorer").wait_for(timeout=300_000)
                    pages.append(time.monotonic() - started)
                return chart_s
            finally:
                page.close()
                server.terminate()
                server.wait()

        app = PROJECT_ROOT / "streamlit_app.py"
        first_chart_s(bare)  # the browser's and the server's first start are slower: not measured
        bare_before = first_chart_s(bare)
        figures = {"app_first_start_s": first_chart_s(app), "app_s": first_chart_s(app)}
        figures["bare_s"] = min(bare_before, first_chart_s(bare))
        figures["app_page_s"] = pages[-1]
        browser.close()
    return {**figures, "ratio": figures["app_s"] / figures["bare_s"]}

RSS_IMAGES = 16  # deit images in one batch, for the memory figures


def run(quick: bool = False) -> tuple[str, dict]:
    """Every measurement, in one process; `quick` runs a small setting (the test suite's)."""
    peak = matmul_peak_gflops()
    figures: dict = {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "matmul_peak_gflops": peak}
    if quick:
        figures["mini"] = bench_allstitch("mini", 32, 16, compiled=False)
        figures["allstitch_identical"] = figures["mini"]["identical"]
        return report(figures), figures
    figures["deit"] = bench_allstitch("deit", 32, 32)
    figures["mini"] = bench_allstitch("mini", 1024, 256)  # evaluation's batch (snnet.evaluate)
    figures["rss"] = {"images": RSS_IMAGES, "largest_anchor_mb": _peak_rss_mb("deit", 1, RSS_IMAGES),
                      "deit_8_mb": _peak_rss_mb("deit", 8, RSS_IMAGES),
                      "deit_71_mb": _peak_rss_mb("deit", 71, RSS_IMAGES),
                      "allocator": faster_allocator() or "glibc malloc"}
    if faster_allocator() is not None:
        figures["rss"].update(glibc_8_mb=_peak_rss_mb("deit", 8, RSS_IMAGES, allocator=False),
                              glibc_71_mb=_peak_rss_mb("deit", 71, RSS_IMAGES, allocator=False))
    figures["cost"] = bench_cost()
    figures["least_squares"] = bench_least_squares()
    figures["rules"] = bench_rules()
    figures["switching"] = bench_switching()
    figures["training"] = bench_training(steps=30, batch=128)
    figures["finetune"] = bench_finetune_to_curve(steps=100)
    figures["app_start"] = bench_app_start()
    figures.update(
        allstitch_speedup=figures["deit"]["speedup"], allstitch_identical=figures["deit"]["identical"]
        and figures["mini"]["identical"], peak_fraction=figures["deit"]["peak_fraction"],
        mini_peak_fraction=figures["mini"]["peak_fraction"],
        compiled_peak_fraction=figures["deit"]["compiled_peak_fraction"],
        mini_compiled_peak_fraction=figures["mini"]["compiled_peak_fraction"], cost_speedup=figures["cost"]["speedup"],
        cost_speedup_kept=figures["cost"]["speedup_kept"],
        ls_solve_s=figures["least_squares"]["solve_s"], finetune_to_curve_s=figures["finetune"]["total_s"],
        finetune_to_preview_s=figures["finetune"]["preview_on_curve_s"],
        train_images_per_s=figures["training"], peak_rss_mb=figures["rss"],
        app_chart_ratio=figures["app_start"] and figures["app_start"]["ratio"],
    )
    return report(figures), figures


REPORT = PROJECT_ROOT / "BENCHMARKS.md"
HAND_KEPT = "<!-- Below this line the sections are kept by hand: python -m snnet bench leaves them as they are. -->"


def write_report(text: str, path: Path) -> None:
    """The report into `path`, above whatever the file keeps by hand below HAND_KEPT."""
    old = path.read_text() if path.exists() else ""
    kept = old[old.index(HAND_KEPT):] if HAND_KEPT in old else HAND_KEPT + "\n"
    path.write_text(text.rstrip() + "\n\n" + kept)


def report(f: dict) -> str:
    """The figures as BENCHMARKS.md shows them."""
    lines = ["# Benchmarks", "",
             f"Measured by `python -m snnet bench` on {f['machine']} with {f['threads']} threads, torch {f['torch']}, "
             "in one run. Weights are random initialisations unless said otherwise (no pretrained weights can be "
             "downloaded here), inputs Gaussian noise. A 2048 x 2048 fp32 matmul ran at "
             f"{f['matmul_peak_gflops']:.0f} GFLOP/s in this run; each engine row measures it again around its own run.", ""]
    engines = [f[name] for name in ("deit", "mini") if name in f]
    lines += ["## Every configuration at once (StitchableNet.run) against each one alone", "",
              "| family | configurations | images (batch) | each alone (s) | all at once (s) | speedup | FLOPs bound "
              "| matmul peak (GFLOP/s) | peak fraction alone | peak fraction at once | same top-1 | max logit difference |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {e['family']} | {e['configurations']} | {e['images']} ({e['batch']}) | {e['loop_s']:.1f} "
              f"| {e['engine_s']:.1f} | {e['speedup']:.2f}x | {e['flops_bound']:.2f}x | {e['matmul_peak_gflops']:.0f} "
              f"| {e['loop_peak_fraction']:.2f} "
              f"| {e['peak_fraction']:.2f} | {'yes' if e['identical'] else 'NO'} | {e['max_abs_diff']:.1e} |"
              for e in engines]
    lines += ["", "All at once shares path prefixes (each front anchor runs once per batch, each stitching layer "
              "once per activation it reads), so it executes fewer FLOPs; the FLOPs bound is the speedup that "
              "saving alone would give. Peak fractions count the FLOPs each way executes.", ""]
    if engines and "compiled_s" in engines[0]:
        lines += ["The same, with the blocks compiled by torch.compile (`StitchableNet.compiled()`; compiling is "
                  "timed apart, on the first batch):", "",
                  "| family | compiling (s) | all at once, compiled (s) | speedup over each alone | peak fraction "
                  "| same top-1 |", "|---|---|---|---|---|---|"]
        lines += [f"| {e['family']} | {e['compile_s']:.1f} | {e['compiled_s']:.1f} | {e['compiled_speedup']:.2f}x "
                  f"| {e['compiled_peak_fraction']:.2f} | {'yes' if e['compiled_identical'] else 'NO'} |" for e in engines]
        lines.append("")
    if "rss" in f:
        r = f["rss"]
        lines += [f"Memory while running, as a job worker runs ({r['allocator']}): peak resident memory above the "
                  f"built network, {r['images']} deit images in one batch: {r['largest_anchor_mb']:.0f} MB for the "
                  f"largest anchor alone, {r['deit_8_mb']:.0f} MB for 8 configurations at once (the anchors and 5 "
                  f"stitches spread over the space), {r['deit_71_mb']:.0f} MB for all 71."]
        if "glibc_71_mb" in r:
            lines += [f"Under glibc's malloc the same runs peak at {r['glibc_8_mb']:.0f} MB for 8 and "
                      f"{r['glibc_71_mb']:.0f} MB for 71: its heap fragments as the run works through "
                      "activations of many sizes, which is why workers preload tcmalloc where it is installed."]
        lines.append("")
    if "cost" in f:
        c = f["cost"]
        lines += ["## Cost of the whole deit space (71 configurations)", "", "| step | seconds |", "|---|---|",
                  f"| trace each anchor's distinct pieces once (embed, blocks, head) | {c['pieces_s']:.2f} |",
                  f"| sum the costs of all 71 configurations from the pieces | {c['sum_s']:.5f} |",
                  f"| fvcore trace of every configuration | {c['full_trace_s']:.1f} |",
                  f"| read the pieces kept in the store (every start after the first) | {c['kept_s']:.4f} |", "",
                  f"Per-piece costing is {c['speedup']:.0f}x faster than tracing every configuration when it traces "
                  f"the pieces (both on the same built anchors), and {c['speedup_kept']:.0f}x once they are kept in "
                  "the store.", ""]
    if "least_squares" in f:
        s = f["least_squares"]
        lines += [f"## Least-squares initialisation, deit, {s['images']} images", "", "| step | seconds |", "|---|---|",
                  f"| the anchors' forward passes alone | {s['forward_s']:.1f} |",
                  f"| forward passes + normal equations for every position (float64) | {s['collect_s']:.1f} |",
                  f"| solving the {s['layers']} layers (joint rule) | {s['solve_s']:.2f} |", ""]
    if f.get("rules"):
        lines += ["## Rule for positions sharing a layer (mini anchors trained alone, digits)", "",
                  "Stitching layers fitted on 256 training renders; relative residual ||[A 1]X - B|| / ||B|| averaged "
                  "over the 68 stitches, on those renders and on 256 others; then top-1 of the stitches on the "
                  "validation split (900 images) straight after initialisation, before any training.", "",
                  "| rule | residual (fit) | residual (held-out) | mean stitch top-1 | worst stitch top-1 |",
                  "|---|---|---|---|---|"]
        lines += [f"| {rule} | {r['fit']:.4f} | {r['held_out']:.4f} | {r['mean_top1']:.2f} | {r['worst_top1']:.2f} |"
                  for rule, r in f["rules"].items()]
        lines.append("")
    if "switching" in f:
        s = f["switching"]
        lines += ["## Switching configuration (mini, one image)", "",
                  f"`set_stitch` takes {s['switch_us']:.1f} µs, {s['switch_us'] / 1e3 / s['forward_ms'] * 100:.3f} % "
                  f"of one forward pass ({s['forward_ms']:.2f} ms); it allocates nothing (tests/test_model.py).", ""]
    if "training" in f:
        t = f["training"]
        lines += ["## Training throughput (mini, batch 128, CPU)", "",
                  f"SN-Net training (one sampled configuration per step): {t['snnet']:.0f} images/s; its largest "
                  f"anchor trained alone on the same batches: {t['largest_anchor']:.0f} images/s.", ""]
    if "finetune" in f:
        t = f["finetune"]
        lines += [f"## From the fine-tune button to the curve (mini, {t['steps']} steps, every configuration)", "",
                  "| start-up | training | preview (a tenth of the test images) | exact evaluation | door to door "
                  "| door to preview on the curve |", "|---|---|---|---|---|---|",
                  f"| {t['startup_s']:.1f} s | {t['training_s']:.1f} s | {t['preview_s']:.1f} s | {t['evaluation_s']:.1f} s "
                  f"| {t['total_s']:.1f} s | {t['preview_on_curve_s']:.1f} s |", ""]
    if f.get("app_start"):
        a = f["app_start"]
        lines += ["## From `streamlit run` to the first chart in the browser", "",
                  "| bare page, one plotly chart | the app, first start on a new store | the app, later starts | ratio "
                  "| the app's own page, later starts |",
                  "|---|---|---|---|---|",
                  f"| {a['bare_s']:.1f} s | {a['app_first_start_s']:.1f} s | {a['app_s']:.1f} s | {a['ratio']:.2f}x "
                  f"| {a['app_page_s']:.1f} s |", "",
                  "The app's first chart is the shipped curve, drawn before torch is imported (app/warmup.py); "
                  "its own page replaces it once the network is loaded.", ""]
    elif "app_start" in f:
        lines += ["## From `streamlit run` to the first chart", "", "Not measured: needs playwright "
                  "(requirements-dev.txt) and Chromium.", ""]
    return "\n".join(lines)
