"""Ready-made recombinations: parents with their weights, matching, stitch training, then search.

The trained supernetwork is cached under $SNNET_HOME/evolve (default ~/.cache/snnet/evolve), in a
folder keyed by the preset, the parents' weights, the matching and the training settings, so a
second search of the same supernetwork starts at once.
"""
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from snnet.errors import SnnetError
from snnet.evolve.matching import match_parents
from snnet.evolve.search import search
from snnet.evolve.supernet import Supernet
from snnet.evolve.train import StitchTrainConfig, train_stitches
from snnet.model import StitchableNet
from snnet.weights import load_weights, weights_hash

PRESETS = ("mini",)
FIT_IMAGES = 256  # CKA of the matching and the least-squares start are measured on these


def evolve_home() -> Path:
    return Path(os.environ.get("SNNET_HOME", Path.home() / ".cache" / "snnet")) / "evolve"


def _mini_parents():
    from snnet.api import shipped_dir
    from snnet.families.recombined import mini_vit_resnet

    family = mini_vit_resnet()
    paths = [shipped_dir("mini") / "zoo" / "mini_small.safetensors",
             shipped_dir("mini-resnet") / "zoo" / "resnet_c16.safetensors"]
    return family, [load_weights(family.build_anchor(i), path) for i, path in enumerate(paths)]


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def run_preset(preset: str, evaluations: int, seed: int = 0, algorithm: str = "nsga2",
               train_config: StitchTrainConfig = StitchTrainConfig(), quiet: bool = False, workers: int = 1,
               scheduler: Optional[str] = None) -> dict:
    if preset not in PRESETS:
        raise SnnetError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    started = time.perf_counter()
    family, parents = _mini_parents()
    task = family.task
    matching = match_parents(StitchableNet(family, parents, family.space()).eval(),
                             list(task.fit_images(family, FIT_IMAGES)))
    _log(f"matched points {list(matching.pairs)} ({matching.reasons()} rejected)", quiet)
    net = Supernet(family, parents, matching.pairs, seed=seed).eval()
    key = hashlib.sha256(json.dumps({"preset": preset, "parents": [weights_hash(p) for p in parents],
                                     "pairs": matching.pairs, "train": asdict(train_config),
                                     "fit_images": FIT_IMAGES}).encode()).hexdigest()[:16]
    weights = evolve_home() / f"{preset}-{key}" / "supernet.safetensors"
    if weights.is_file():
        load_weights(net, weights)
        _log(f"trained stitching layers from {weights}", quiet)
        trained = json.loads((weights.parent / "train.json").read_text())
    else:
        _log(f"training {len(net.stitch_layers)} stitching layers by feature matching ({train_config.steps} steps)",
             quiet)
        epochs = task.train_data(family, train_config.seed)
        trained = train_stitches(net, lambda epoch: epochs(epoch)[0], train_config,
                                 task.fit_images(family, FIT_IMAGES), out_path=weights)
        (weights.parent / "train.json").write_text(json.dumps(trained, indent=1))
    net.eval()
    _log(f"searching ({algorithm}, {evaluations} requests, seed {seed})", quiet)
    result = search(net, *task.eval_set(family, "val"), budget=evaluations, seed=seed, algorithm=algorithm,
                    test_set=task.eval_set(family, "test"), workers=workers, scheduler=scheduler)
    return {
        "preset": preset,
        **result,
        "matching": {"pairs": [list(pair) for pair in matching.pairs],
                     "weights": [matching.weights[pair] for pair in matching.pairs],
                     "rejected": matching.reasons()},
        "training": {"steps": trained["steps"], "final_loss": trained["final_loss"],
                     "train_s": trained["train_s"], "weights": str(weights)},
        "total_s": time.perf_counter() - started,
    }
