"""python -m snnet bench: the speed and fit figures behind BENCHMARKS.md, measured in one run.

These machines are noisy, so targets are stated as ratios between quantities measured together.
"""
import platform
import time
from typing import Callable

import torch

from snnet import cost
from snnet.families import get_family
from snnet.model import StitchableNet
from snnet.stitching import collect_statistics, load_solutions, relative_residuals, solve_layers


def _seconds(fn: Callable, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def bench_cost(lines: list[str]) -> None:
    family = get_family("deit")
    space = family.space()
    cost._ANCHOR_COSTS.clear()
    measure_s = _seconds(lambda: cost.anchor_costs(family))
    sum_s = _seconds(lambda: cost.space_costs(family, space), repeat=20)
    net = StitchableNet.from_family(family, device="meta").to_empty(device="cpu").eval()
    sample = [0, 1, 2, 3, 24, 36, 37, 56, 70]
    full_s = _seconds(lambda: [cost.trace_config_macs(net, s) for s in sample]) / len(sample) * len(space)
    lines += [
        "## Cost of the whole deit space (71 configurations)",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| trace each anchor's pieces once (embed, distinct blocks, head) | {measure_s:.2f} |",
        f"| sum the costs of all 71 configurations from the pieces | {sum_s:.5f} |",
        f"| full fvcore trace of every configuration (from {len(sample)} traced, scaled to 71) | {full_s:.1f} |",
        "",
        f"Per-piece costing is {full_s / (measure_s + sum_s):.0f}x faster than tracing every configuration; "
        f"once the pieces are known, the whole space costs {sum_s * 1e3:.2f} ms.",
        "",
    ]


def bench_least_squares(lines: list[str], images: int = 100, batch: int = 50) -> None:
    family = get_family("deit")
    torch.manual_seed(0)
    net = StitchableNet.from_family(family).eval()
    data = torch.randn(images, *family.input_size)
    batches = list(data.split(batch))
    with torch.no_grad():
        forward_s = _seconds(lambda: [net.block_tokens(a, x) for x in batches for a in range(3)])
    start = time.perf_counter()
    stats = collect_statistics(net, batches)
    collect_s = time.perf_counter() - start
    start = time.perf_counter()
    solve_layers(net, stats, "joint")
    solve_s = time.perf_counter() - start
    lines += [
        f"## Least-squares initialisation, deit, {images} images (batches of {batch})",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| the three anchors' forward passes alone | {forward_s:.1f} |",
        f"| forward passes + normal equations for all 68 positions (float64) | {collect_s:.1f} |",
        f"| solving the 22 layers (SVD least squares, joint rule) | {solve_s:.2f} |",
        "",
        f"Initialising all 22 layers takes {(collect_s + solve_s) / forward_s:.2f}x the time of the "
        "anchors' forward passes on the same images: each anchor runs once per batch.",
        "",
    ]


def bench_rules(lines: list[str]) -> None:
    """Joint versus mean on the mini anchors trained alone (shipped in checkpoints/mini/zoo)."""
    from snnet.api import shipped_dir
    from snnet.data import digits_eval_set, digits_split
    from snnet.evaluate import evaluate_space
    from snnet.weights import load_weights

    family = get_family("mini")
    zoo = shipped_dir("mini") / "zoo"
    if not all((zoo / f"{spec.name}.safetensors").exists() for spec in family.anchors):
        lines += ["## Rule for positions sharing a layer", "", f"skipped: no trained anchors in {zoo}", ""]
        return
    net = StitchableNet.from_family(family).eval()
    for index, spec in enumerate(family.anchors):
        load_weights(net.anchors[index], zoo / f"{spec.name}.safetensors")
    train_images, _ = digits_split("train", 1, seed=777)
    fit = collect_statistics(net, train_images[:256].split(64))
    held_out = collect_statistics(net, train_images[256:512].split(64))
    images, labels = digits_eval_set("val")
    rows = []
    for rule in ("joint", "mean"):
        solutions = solve_layers(net, fit, rule)
        load_solutions(net, solutions)
        fitted = relative_residuals(net, fit, solutions)
        unseen = relative_residuals(net, held_out, solutions)
        top1 = [r["top1"] for i, r in evaluate_space(net, images, labels).items() if net.space[i].kind == "stitch"]
        rows.append(f"| {rule} | {sum(fitted.values()) / len(fitted):.4f} | {sum(unseen.values()) / len(unseen):.4f} "
                    f"| {sum(top1) / len(top1):.2f} | {min(top1):.2f} |")
    lines += [
        "## Rule for positions sharing a layer (mini anchors trained alone, digits)",
        "",
        "Stitching layers fitted on 256 training renders; relative residual ||[A 1]X - B|| / ||B|| "
        "averaged over the 68 stitches, on those renders and on 256 others; then top-1 of the "
        "stitches on the validation split (900 images) straight after initialisation, before any training.",
        "",
        "| rule | residual (fit) | residual (held-out) | mean stitch top-1 | worst stitch top-1 |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def bench_switching(lines: list[str]) -> None:
    family = get_family("mini")
    net = StitchableNet.from_family(family).eval()
    x = torch.randn(1, *family.input_size)
    ids = [c.id for c in net.space]
    switch_s = _seconds(lambda: [net.set_stitch(i) for i in ids], repeat=100) / len(ids)
    with torch.no_grad():
        forward_s = _seconds(lambda: net(x, stitch=24), repeat=50)
    lines += [
        "## Switching configuration (mini, one image)",
        "",
        f"`set_stitch` takes {switch_s * 1e6:.1f} µs, {switch_s / forward_s * 100:.3f} % of one forward pass "
        f"({forward_s * 1e3:.2f} ms); it allocates nothing (tests/test_model.py checks every parameter's storage).",
        "",
    ]


def run(out_path=None) -> str:
    torch.set_num_threads(torch.get_num_threads())
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `python -m snnet bench` on {platform.machine()} with {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, in one run. Weights are random initialisations (no pretrained "
        "weights can be downloaded here), inputs are Gaussian noise.",
        "",
    ]
    for section in (bench_cost, bench_least_squares, bench_rules, bench_switching):
        section(lines)
        print(f"done: {section.__name__}", flush=True)
    text = "\n".join(lines)
    if out_path:
        with open(out_path, "w") as handle:
            handle.write(text)
    return text
