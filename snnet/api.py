"""The public face of the backend: what the CLI and the app call.

load the shipped or given weights -> results (from the store; what it lacks comes from the shipped
metrics file when the weights match, else is evaluated and stored) -> predictions.
"""
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from snnet.cost import space_rows
from snnet.data import load_image
from snnet.errors import SnnetError
from snnet.evaluate import evaluate_batches, evaluate_space, folder_loader, latency_ms, space_latency
from snnet.families import family_names, get_family
from snnet.model import StitchableNet
from snnet.store import Store, settings_key
from snnet.weights import load_weights, weights_hash

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_dir(family_name: str) -> Path:
    return CHECKPOINTS / family_name


def family_rows() -> list[dict]:
    """Every registered family as plain data; `weights`: whether its SN-Net weights are here."""
    rows = []
    for name in family_names():
        family = get_family(name)
        rows.append({"name": name, "description": family.description, "task": family.task.name,
                     "anchors": list(family.anchor_names), "configurations": len(family.space()),
                     "weights": has_weights(name)})
    return rows


def has_weights(family_name: str) -> bool:
    """Whether the family's SN-Net weights are here (shipped, built or imported)."""
    return (shipped_dir(family_name) / "snnet.safetensors").is_file()


def weights_routes(family_name: str) -> str:
    """How to get a family's SN-Net weights, in one line."""
    family = get_family(family_name)
    if family.task.offline:
        return f"build them with python -m snnet build-default --family {family_name}, or give --weights PATH"
    routes = [f"build them from the timm anchors with python -m snnet init --family {family_name} --data DIR",
              "or give --weights PATH"]
    if family.stitch_stages is None:  # the released checkpoints we import are the plain-ViT ones
        routes.insert(0, f"import the released ones with python -m snnet convert-official SRC "
                         f"--out {shipped_dir(family_name) / 'snnet.safetensors'}")
    return ", ".join(routes)


def missing_weights(family_name: str) -> str:
    """One line: the family's weights are missing, and how to get them."""
    path = shipped_dir(family_name) / "snnet.safetensors"
    kind = "shipped weights" if get_family(family_name).task.offline else "SN-Net weights"
    return f"no {kind} for family {family_name} ({path} is missing): {weights_routes(family_name)}"


def load_net(family_name: str, weights: Optional[Path] = None, device: str = "cpu",
             official_compat: bool = False) -> StitchableNet:
    """A StitchableNet with the given weights, or the family's shipped ones.

    official_compat: stitched paths skip the back anchor's final norm, as the reference code does.
    """
    family = get_family(family_name)
    path = Path(weights) if weights else shipped_dir(family_name) / "snnet.safetensors"
    if weights is None and not path.exists():
        raise SnnetError(missing_weights(family_name))
    torch.manual_seed(0)
    net = StitchableNet.from_family(family)
    load_weights(net, path)
    net.final_norm = not official_compat
    return net.to(device).eval()


def eval_settings(net: StitchableNet, split: str, dataset=None, bf16: bool = False) -> str:
    """The cache key of an evaluation; `dataset` is the image folder of an ImageNet family."""
    space = net.space
    precision = {"precision": "bf16"} if bf16 else {}  # fp32 keys stay as they always were
    return settings_key(kernel=space.kernel, stride=space.stride, direction=space.direction,
                        final_norm=net.final_norm, split=split, data=net.family.task.eval_set_key(net.family, split, dataset),
                        **precision)


def _shipped_metrics(family_name: str) -> Optional[dict]:
    path = shipped_dir(family_name) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def evaluation_folder(net: StitchableNet, split: str, data=None, needed: bool = True):
    """The image folder a family is evaluated on (None for in-memory sets, or when no folder is
    given and none is needed, as when only cached numbers are asked for)."""
    return net.family.task.eval_folder(net.family, split, data, needed)


def evaluate(net: StitchableNet, split: str, stitch_ids: Optional[Sequence[int]] = None, store: Optional[Store] = None,
             dataset=None, batch_size: int = 256, workers: int = 4, bf16: bool = False,
             show_bar: bool = False, on_batch: Optional[Callable[[int, int], None]] = None) -> dict[int, dict]:
    """Measure configurations (top-1, top-5, loss, latency) and store them; under torchrun each rank
    evaluates its shard of a folder and rank 0 alone measures latency and writes."""
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    ids = list(range(len(net.space))) if stitch_ids is None else list(stitch_ids)
    device = next(net.parameters()).device
    if dataset is None:
        images, labels = net.family.task.eval_set(net.family, split)
        if world > 1:  # each rank its share; evaluate_batches sums the tallies
            images, labels = images[rank::world], labels[rank::world]
        measured = evaluate_space(net, images, labels, ids, batch_size, show_bar=show_bar, bf16=bf16, on_batch=on_batch)
        sample = images[:1]
    else:
        loader = folder_loader(dataset, batch_size, workers)
        measured = evaluate_batches(net, loader, ids, show_bar and rank == 0, total=len(loader), bf16=bf16,
                                    on_batch=on_batch)
        sample = dataset[0][0][None]
    if rank == 0:
        for stitch_id, latency in space_latency(net, sample.to(device), ids).items():
            measured[stitch_id]["latency_ms"] = latency
        (store or Store()).put_metrics(net.family.name, weights_hash(net), split,
                                       eval_settings(net, split, dataset, bf16), measured)
    return measured


def metrics(net: StitchableNet, split: Optional[str] = None, store: Optional[Store] = None,
            compute_missing: bool = True, show_bar: bool = False,
            stitch_ids: Optional[Sequence[int]] = None, data=None,
            on_batch: Optional[Callable[[int, int], None]] = None) -> dict[int, dict]:
    """Per-configuration metrics of `net` (all, or `stitch_ids`), from the cache when known.

    `data`: an ImageNet family's image folder (DIR with val/<wnid>/*.JPEG; default $SNNET_IMAGENET).
    """
    store = store or Store()
    split = split or net.family.task.default_split
    family, weights = net.family.name, weights_hash(net)
    dataset = evaluation_folder(net, split, data, needed=compute_missing)
    settings = eval_settings(net, split, dataset)
    known = store.get_metrics(family, weights, split, settings)
    if len(known) < len(net.space):
        shipped = _shipped_metrics(family)
        if shipped and shipped["weights"] == weights and shipped["settings"] == settings:
            store.put_metrics(family, weights, split, settings,
                              {row["id"]: row for row in shipped["configurations"]})
            store.put_zoo(family, split, shipped["zoo"])
            known = store.get_metrics(family, weights, split, settings)
    wanted = range(len(net.space)) if stitch_ids is None else stitch_ids
    missing = [i for i in wanted if i not in known]
    if missing and compute_missing:
        known = {**known, **evaluate(net, split, missing, store, dataset, show_bar=show_bar, on_batch=on_batch)}
    return known


def results(net: StitchableNet, split: Optional[str] = None, store: Optional[Store] = None, show_bar: bool = False,
            compute_missing: bool = True, data=None, zoo_csv: Optional[Path] = None) -> list[dict]:
    """One row per configuration (cost and metrics), then one per zoo model (kind "zoo").

    With compute_missing=False nothing is evaluated: configurations not in the cache have no metrics.
    The zoo of an ImageNet family is timm's published figures (curated, or the CSV at `zoo_csv`).
    """
    store = store or Store()
    split = split or net.family.task.default_split
    measured = metrics(net, split, store, compute_missing=compute_missing, show_bar=show_bar, data=data)
    rows = [{**row, **measured.get(row["id"], {})} for row in space_rows(net.family, net.space, net.final_norm)]
    zoo_rows = net.family.task.zoo(net.family, store, split, zoo_csv)
    return rows + [{"kind": "zoo", **row} for row in zoo_rows]


def predict(net: StitchableNet, stitch: int, images: Sequence, top: int = 5) -> list[dict]:
    """Top classes of each image (a path or a PIL image) through one configuration."""
    net.space[stitch]  # a bad id fails before any image is read
    return [{**row, "stitch": stitch} for row in _top_classes(net, lambda x: net(x, stitch=stitch), images, top)]


def _top_classes(net: StitchableNet, run: Callable[[torch.Tensor], torch.Tensor], images: Sequence,
                 top: int) -> list[dict]:
    """Each image prepared as the family's task prepares it, through `run` (a batch to logits)."""
    family = net.family
    labels = family.task.class_labels(family)
    device = next(net.parameters()).device
    out = []
    for image in images:
        name = str(image) if isinstance(image, (str, Path)) else getattr(image, "filename", "") or "image"
        pil = load_image(image) if isinstance(image, (str, Path)) else image
        x = family.task.preprocess(family, pil)[None].to(device)
        with torch.no_grad():
            probs = run(x).float().softmax(dim=1)[0]
            elapsed = latency_ms(run, x, repeats=5, warmup=1)
        values, indices = probs.topk(min(top, len(probs)))
        out.append({"image": name, "latency_ms": elapsed,
                    "top5": [{"class_index": int(i), "label": labels[int(i)], "prob": float(p)}
                             for p, i in zip(values, indices)]})
    return out


# Evolve: searches of a supernetwork's offspring (snnet.evolve), run as background jobs. A search's
# measured networks are rows of the store, each named by its genotype as an active key.

def evolve_defaults() -> dict:
    """What a search form starts from, each default held once (EvolveSpec, StitchTrainConfig)."""
    from snnet.evolve.job import EvolveSpec
    from snnet.evolve.presets import PRESETS
    from snnet.evolve.search import ALGORITHMS
    from snnet.evolve.train import StitchTrainConfig, TaskTrainConfig

    spec = EvolveSpec()
    return {"preset": spec.preset, "presets": list(PRESETS), "evaluations": spec.evaluations, "seed": spec.seed,
            "algorithm": spec.algorithm, "algorithms": list(ALGORITHMS), "train_steps": StitchTrainConfig().steps,
            "task_steps": TaskTrainConfig().steps}


def submit_evolve(evaluations: int, seed: int = 0, algorithm: str = "nsga2", preset: str = "mini",
                  train: Optional[dict] = None, task: Optional[dict] = None, device: str = "cpu",
                  store: Optional[Store] = None) -> int:
    """Queue a search; `train` and `task`: settings of the stitching layers' feature matching
    (StitchTrainConfig) and training on labels (TaskTrainConfig) other than their defaults."""
    from snnet.evolve.job import EvolveSpec, submit

    spec = EvolveSpec(preset, evaluations, seed, algorithm, dict(train or {}), dict(task or {}), device)
    return submit(spec, store or Store())


def evolve_searches(store: Optional[Store] = None) -> list[dict]:
    """Every evolve search, newest first; a search whose worker died reads as failed."""
    from snnet import jobs
    from snnet.evolve.job import KIND

    store = store or Store()
    jobs.refresh(store)
    return [job for job in store.list_jobs() if job["kind"] == KIND]


def evolve_search(job_id: int, store: Optional[Store] = None) -> dict:
    """One search (its job row) with the networks measured so far, in the order they were measured;
    a search whose worker died reads as failed."""
    from snnet import jobs
    from snnet.evolve.job import KIND

    store = store or Store()
    jobs.refresh(store)
    job = store.get_job(job_id)
    if job is None or job["kind"] != KIND:
        raise SnnetError(f"no evolve search {job_id}")
    return {**job, "points": store.get_evolve_points(job_id)}


def cancel_job(job_id: int, store: Optional[Store] = None) -> None:
    from snnet import jobs

    jobs.cancel(store or Store(), job_id)


def evolve_roles(points: Sequence[dict]) -> list[dict]:
    """Each measured network with its role and standing (see snnet.evolve.search.roles)."""
    from snnet.evolve.search import roles

    return roles(points)


def load_supernet(spec: dict):
    """The supernetwork a search ran on (trained stitching layers from the evolve cache), on the CPU."""
    from snnet.evolve.job import EvolveSpec, task_config, train_config
    from snnet.evolve.presets import prepare

    spec = EvolveSpec.from_json(spec)
    net, _, _ = prepare(spec.preset, train_config(spec), quiet=True, seed=spec.seed, task_config=task_config(spec))
    return net.to("cpu").eval()


def offspring_summary(net, genotype: Sequence[int]) -> dict:
    """What an offspring runs (one path, or two whose logits are averaged) and what it costs."""
    genotype = net.genome.check(genotype)
    cost = net.offspring_cost(genotype)
    return {"genotype": list(genotype), "paths": net.genome.decode(genotype), "gmacs": cost.gmacs,
            "params_m": cost.params_m}


def offspring_test_error(net, job_id: int, genotype: Sequence[int], store: Optional[Store] = None) -> float:
    """An offspring's test error: from the store when its search measured it, else measured now
    and kept with the search's points."""
    from snnet.evolve.search import top1_error

    store = store or Store()
    known = {tuple(p["genotype"]): p for p in store.get_evolve_points(job_id)}
    point = known.get(tuple(genotype))
    if point is not None and point["test_error"] is not None:
        return point["test_error"]
    test_error = top1_error(net, genotype, *net.family.task.eval_set(net.family, "test"))
    if point is not None:
        store.set_evolve_test_error(job_id, list(genotype), test_error)
    return test_error


def predict_genotype(net, genotype: Sequence[int], images: Sequence, top: int = 5) -> list[dict]:
    """Top classes of each image through an offspring of a supernetwork."""
    genotype = net.genome.check(genotype)  # a bad genotype fails before any image is read
    net.offspring(genotype)  # its paths join the space before the timed runs
    return [{**row, "genotype": list(genotype)}
            for row in _top_classes(net, lambda x: net.forward_genotype(x, genotype), images, top)]
