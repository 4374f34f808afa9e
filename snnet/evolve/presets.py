"""Ready-made recombinations: parents with their weights, matching, stitch training, then search.

The trained stitching layers are cached under $SNNET_HOME/evolve (default ~/.cache/snnet/evolve), in
a folder keyed by the preset, the parents' weights, the matching and the training settings, so a
second search of the same supernetwork starts at once. The project ships the folder of the default
settings in checkpoints/evolve, so that a fresh clone searches at once too.

Presets:
- mini: the mini ViT and the mini ResNet of the embedded digits task, with their shipped weights;
  the search runs on the validation split and the front is checked on the test split.
- resnet50-resnext50: timm's ResNet-50 and ResNeXt-50 32x4d with their ImageNet weights, read from
  files (--weights DIR, checkpoints/resnet50-resnext50/ or the hub's cache), on an ImageNet folder
  (--data DIR): `images` training images are what the stitching layers learn from, as many other
  training images are the search split, and as many validation images the test split.
"""
import functools
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from snnet.api import shipped_dir
from snnet.errors import SnnetError
from snnet.evolve.matching import match_parents
from snnet.evolve.search import search
from snnet.evolve.supernet import Supernet
from snnet.evolve.train import StitchTrainConfig, TaskTrainConfig, train_on_task, train_stitches
from snnet.model import StitchableNet
from snnet.weights import load_weights, save_weights, weights_hash

PRESETS = ("mini", "resnet50-resnext50")
LAYERS_FILE = "stitch_layers.safetensors"  # the parents come from their own files
FIT_IMAGES = 256  # CKA of the matching and the least-squares start are measured on these
FOLDER_IMAGES = 1024  # per split, for presets on an image folder


def evolve_home() -> Path:
    return Path(os.environ.get("SNNET_HOME", Path.home() / ".cache" / "snnet")) / "evolve"


def _parents(preset: str, weights: Optional[Path]):
    """The preset's family and its two parents with their trained weights."""
    from snnet.families import recombined

    if preset == "mini":
        family = recombined.mini_vit_resnet()
        paths = [shipped_dir("mini") / "zoo" / "mini_tiny.safetensors",
                 shipped_dir("mini-resnet") / "zoo" / "resnet_c16.safetensors"]
        return family, [load_weights(family.build_anchor(i), path) for i, path in enumerate(paths)]
    from snnet.checkpoints import load_anchors

    family = recombined.resnet50_resnext50()
    return family, load_anchors(family, weights)


@dataclass
class PresetData:
    """What a preset's stitching layers learn from and its search is measured on; each set is read
    when asked for (a supernetwork whose layers are cached already never reads its training set)."""
    fit: Callable[[], Iterator[torch.Tensor]]  # batches for the matching's CKA and the least-squares start
    train_data: Callable[[int], Callable[[int], tuple[torch.Tensor, torch.Tensor]]]  # seed -> (epoch -> images, labels)
    search: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    test: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    key: Optional[dict] = None  # what identifies the data in the trained layers' cache (None: the embedded task)


def _data(family, seed: int, data: Optional[str], images: int) -> PresetData:
    task = family.task
    if task.offline:
        return PresetData(lambda: task.fit_images(family, FIT_IMAGES), lambda train_seed: task.train_data(family, train_seed),
                          lambda: task.eval_set(family, "val"), lambda: task.eval_set(family, "test"))
    from snnet.data import split_folder

    train_folder = task.folder(family, split_folder(family, data, "train"))
    val_folder = task.folder(family, split_folder(family, data, "val"))
    if len(train_folder) < 2 * images or len(val_folder) < images:
        raise SnnetError(f"the preset needs {2 * images} training and {images} validation images, the folder holds "
                         f"{len(train_folder)} and {len(val_folder)}: give a smaller --images")
    chosen = torch.randperm(len(train_folder), generator=torch.Generator().manual_seed(seed))
    tested = torch.randperm(len(val_folder), generator=torch.Generator().manual_seed(seed))[:images]
    training = functools.cache(lambda: _tensors(train_folder, chosen[:images]))
    return PresetData(lambda: iter(_tensors(train_folder, chosen[:min(images, FIT_IMAGES)])[0].split(32)),
                      lambda train_seed: lambda epoch: training(),
                      lambda: _tensors(train_folder, chosen[images: 2 * images]), lambda: _tensors(val_folder, tested),
                      {"train": task.eval_set_key(family, "train", train_folder),
                       "val": task.eval_set_key(family, "val", val_folder), "images": images, "seed": seed})


def _tensors(dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Those images of a folder, with the evaluation transforms, as one tensor, and their labels."""
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices.tolist()), batch_size=64,
                                         num_workers=min(4, os.cpu_count() or 1))
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def prepare(preset: str, train_config: StitchTrainConfig = StitchTrainConfig(), quiet: bool = False,
            seed: int = 0, task_config: TaskTrainConfig = TaskTrainConfig(), weights: Optional[Path] = None,
            data: Optional[str] = None, images: int = FOLDER_IMAGES) -> tuple[Supernet, dict, PresetData]:
    """The preset's supernetwork with trained stitching layers (trained once, then read from the
    cache), in eval mode; what was done to make it: the matching and both training phases
    (feature matching, then the task; see snnet.evolve.train); and the data it used."""
    if preset not in PRESETS:
        raise SnnetError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    family, parents = _parents(preset, weights)
    sets = _data(family, seed, data, images)
    matching = match_parents(StitchableNet(family, parents, family.space()).eval(), list(sets.fit()))
    _log(f"matched points {list(matching.pairs)} ({matching.reasons()} rejected)", quiet)
    net = Supernet(family, parents, matching.pairs, seed=seed).eval()
    identity = {"preset": preset, "parents": [weights_hash(p) for p in parents], "pairs": matching.pairs,
                "train": asdict(train_config), "task": asdict(task_config), "fit_images": FIT_IMAGES}
    if sets.key is not None:
        identity["data"] = sets.key
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    layers_file = evolve_home() / f"{preset}-{key}" / LAYERS_FILE
    shipped = shipped_dir("evolve") / f"{preset}-{key}" / LAYERS_FILE
    found = next((path for path in (layers_file, shipped) if path.is_file()), None)
    if found is not None:
        load_weights(net.stitch_layers, found)
        _log(f"trained stitching layers from {found}", quiet)
        trained = json.loads((found.parent / "train.json").read_text())
        layers_file = found
    else:
        _log(f"training {len(net.stitch_layers)} stitching layers by feature matching ({train_config.steps} steps)",
             quiet)
        epochs = sets.train_data(train_config.seed)
        trained = train_stitches(net, lambda epoch: epochs(epoch)[0], train_config, sets.fit())
        _log(f"training them on the task ({task_config.steps} steps)", quiet)
        trained["task"] = train_on_task(net, sets.train_data(task_config.seed), task_config)
        save_weights(net.stitch_layers, layers_file)
        (layers_file.parent / "train.json").write_text(json.dumps(trained, indent=1))
    info = {"matching": {"pairs": [list(pair) for pair in matching.pairs],
                         "weights": [matching.weights[pair] for pair in matching.pairs],
                         "rejected": matching.reasons()},
            "training": {"steps": trained["steps"], "final_loss": trained["final_loss"],
                         "task_steps": trained["task"]["steps"], "task_final_loss": trained["task"]["final_loss"],
                         "train_s": trained["train_s"] + trained["task"]["train_s"], "weights": str(layers_file)}}
    return net.eval(), info, sets


def run_preset(preset: str, evaluations: int, seed: int = 0, algorithm: str = "nsga2",
               train_config: StitchTrainConfig = StitchTrainConfig(), quiet: bool = False, workers: int = 1,
               scheduler: Optional[str] = None, task_config: TaskTrainConfig = TaskTrainConfig(),
               weights: Optional[Path] = None, data: Optional[str] = None, images: int = FOLDER_IMAGES) -> dict:
    """Prepare the preset's supernetwork, then search its offspring on the search split (here, in
    `workers` processes or on the Dask cluster at `scheduler`) and check the front on the test split."""
    started = time.perf_counter()
    net, info, sets = prepare(preset, train_config, quiet, seed, task_config, weights, data, images)
    _log(f"searching ({algorithm}, {evaluations} requests, seed {seed})", quiet)
    result = search(net, *sets.search(), budget=evaluations, seed=seed, algorithm=algorithm, test_set=sets.test(),
                    workers=workers, scheduler=scheduler)
    return {"preset": preset, **result, **info, "total_s": time.perf_counter() - started}
