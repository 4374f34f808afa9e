"""Ready-made recombinations: parents with their weights, matching, stitch training, then search.

The trained stitching layers are cached under $SNNET_HOME/evolve (default ~/.cache/snnet/evolve), in
a folder keyed by the preset, the parents' weights, the matching and the training settings, so a
second search of the same supernetwork starts at once. The project ships the folder of the default
settings in checkpoints/evolve, so that a fresh clone searches at once too.
"""
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from snnet.api import shipped_dir
from snnet.errors import SnnetError
from snnet.evolve.matching import match_parents
from snnet.evolve.search import search
from snnet.evolve.supernet import Supernet
from snnet.evolve.train import StitchTrainConfig, TaskTrainConfig, train_on_task, train_stitches
from snnet.model import StitchableNet
from snnet.weights import load_weights, save_weights, weights_hash

PRESETS = ("mini",)
LAYERS_FILE = "stitch_layers.safetensors"  # the parents come from their own files
FIT_IMAGES = 256  # CKA of the matching and the least-squares start are measured on these


def evolve_home() -> Path:
    return Path(os.environ.get("SNNET_HOME", Path.home() / ".cache" / "snnet")) / "evolve"


def _mini_parents():
    from snnet.families.recombined import mini_vit_resnet

    family = mini_vit_resnet()
    paths = [shipped_dir("mini") / "zoo" / "mini_tiny.safetensors",
             shipped_dir("mini-resnet") / "zoo" / "resnet_c16.safetensors"]
    return family, [load_weights(family.build_anchor(i), path) for i, path in enumerate(paths)]


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def prepare(preset: str, train_config: StitchTrainConfig = StitchTrainConfig(), quiet: bool = False,
            seed: int = 0, task_config: TaskTrainConfig = TaskTrainConfig()) -> tuple[Supernet, dict]:
    """The preset's supernetwork with trained stitching layers (trained once, then read from the
    cache), in eval mode, and what was done to make it: the matching and both training phases
    (feature matching, then the task; see snnet.evolve.train)."""
    if preset not in PRESETS:
        raise SnnetError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    family, parents = _mini_parents()
    task = family.task
    matching = match_parents(StitchableNet(family, parents, family.space()).eval(),
                             list(task.fit_images(family, FIT_IMAGES)))
    _log(f"matched points {list(matching.pairs)} ({matching.reasons()} rejected)", quiet)
    net = Supernet(family, parents, matching.pairs, seed=seed).eval()
    key = hashlib.sha256(json.dumps({"preset": preset, "parents": [weights_hash(p) for p in parents],
                                     "pairs": matching.pairs, "train": asdict(train_config), "task": asdict(task_config),
                                     "fit_images": FIT_IMAGES}).encode()).hexdigest()[:16]
    weights = evolve_home() / f"{preset}-{key}" / LAYERS_FILE
    shipped = shipped_dir("evolve") / f"{preset}-{key}" / LAYERS_FILE
    found = next((path for path in (weights, shipped) if path.is_file()), None)
    if found is not None:
        load_weights(net.stitch_layers, found)
        _log(f"trained stitching layers from {found}", quiet)
        trained = json.loads((found.parent / "train.json").read_text())
        weights = found
    else:
        _log(f"training {len(net.stitch_layers)} stitching layers by feature matching ({train_config.steps} steps)",
             quiet)
        epochs = task.train_data(family, train_config.seed)
        trained = train_stitches(net, lambda epoch: epochs(epoch)[0], train_config,
                                 task.fit_images(family, FIT_IMAGES))
        _log(f"training them on the task ({task_config.steps} steps)", quiet)
        trained["task"] = train_on_task(net, task.train_data(family, task_config.seed), task_config)
        save_weights(net.stitch_layers, weights)
        (weights.parent / "train.json").write_text(json.dumps(trained, indent=1))
    info = {"matching": {"pairs": [list(pair) for pair in matching.pairs],
                         "weights": [matching.weights[pair] for pair in matching.pairs],
                         "rejected": matching.reasons()},
            "training": {"steps": trained["steps"], "final_loss": trained["final_loss"],
                         "task_steps": trained["task"]["steps"], "task_final_loss": trained["task"]["final_loss"],
                         "train_s": trained["train_s"] + trained["task"]["train_s"], "weights": str(weights)}}
    return net.eval(), info


def run_preset(preset: str, evaluations: int, seed: int = 0, algorithm: str = "nsga2",
               train_config: StitchTrainConfig = StitchTrainConfig(), quiet: bool = False, workers: int = 1,
               scheduler: Optional[str] = None) -> dict:
    """Prepare the preset's supernetwork, then search its offspring on the validation split (here, in
    `workers` processes or on the Dask cluster at `scheduler`) and check the front on the test split."""
    started = time.perf_counter()
    net, info = prepare(preset, train_config, quiet, seed)
    task = net.family.task
    _log(f"searching ({algorithm}, {evaluations} requests, seed {seed})", quiet)
    result = search(net, *task.eval_set(net.family, "val"), budget=evaluations, seed=seed, algorithm=algorithm,
                    test_set=task.eval_set(net.family, "test"), workers=workers, scheduler=scheduler)
    return {"preset": preset, **result, **info, "total_s": time.perf_counter() - started}
