"""An evolve search as a background job: prepare the preset's supernetwork, search it, check the front.

The job is a row of the store like a fine-tune (snnet.jobs queues it, runs it in a worker process
and dispatches the next one); what it adds is the search's own record: every network it measures is
written to the store the moment it is measured, so a page draws the search while it runs, and a
refresh, or a second browser, sees the same points. A cancel is read after each measurement; the
preparation (matching, stitch training) cannot stop midway and is honoured when it ends.
"""
import time
from dataclasses import asdict, dataclass, field, fields, replace

from snnet.errors import SnnetError
from snnet.store import Store

KIND = "evolve"
PREPARING = "preparing the supernetwork (matching the parents; training the stitching layers, once per setting)"


@dataclass
class EvolveSpec:
    preset: str = "mini"
    evaluations: int = 60  # genotype requests of the search; the parents are measured besides
    seed: int = 0
    algorithm: str = "nsga2"
    train: dict = field(default_factory=dict)  # StitchTrainConfig fields that differ from its defaults
    task: dict = field(default_factory=dict)  # TaskTrainConfig fields (the training on labels) likewise
    device: str = "cpu"

    kind = KIND

    @property
    def queue_name(self) -> str:
        """What the store's family column holds for this job: the preset, not a registered family."""
        return f"evolve:{self.preset}"

    @classmethod
    def from_json(cls, spec: dict) -> "EvolveSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in spec.items() if key in known})


def _config(config_class, overrides: dict, what: str):
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SnnetError(f"{what} has no setting(s) {', '.join(unknown)}: choose from {', '.join(sorted(known))}")
    return config_class(**overrides)


def train_config(spec: EvolveSpec):
    """The stitch training the spec asks for; with equal settings, prepare() finds the same cache."""
    from snnet.evolve.train import StitchTrainConfig

    return _config(StitchTrainConfig, spec.train, "stitch training")


def task_config(spec: EvolveSpec):
    """The stitching layers' training on the task's labels, after feature matching."""
    from snnet.evolve.train import TaskTrainConfig

    return _config(TaskTrainConfig, spec.task, "training on the task")


def validate(spec: EvolveSpec) -> EvolveSpec:
    """Every check that needs no process, each failure one line; the device named as its queue is."""
    import torch

    from snnet.evolve.presets import PRESETS
    from snnet.evolve.search import ALGORITHMS
    from snnet.train import resolve_device

    if spec.preset not in PRESETS:
        raise SnnetError(f"unknown preset {spec.preset!r}: choose from {', '.join(PRESETS)}")
    if spec.algorithm not in ALGORITHMS:
        raise SnnetError(f"unknown search algorithm {spec.algorithm!r}: choose from {', '.join(ALGORITHMS)}")
    if isinstance(spec.evaluations, bool) or not isinstance(spec.evaluations, int) or spec.evaluations < 1:
        raise SnnetError(f"the evaluation budget must be a whole number of at least 1, got {spec.evaluations!r}")
    for config, what in ((train_config(spec), "stitch training"), (task_config(spec), "training on the task")):
        if config.steps < 0 or config.batch_size < 1:
            raise SnnetError(f"{what} needs steps >= 0 and batch size >= 1, got {config.steps} and {config.batch_size}")
    device = resolve_device(spec.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return replace(spec, device=str(device))


def submit(spec: EvolveSpec, store: Store) -> int:
    from snnet.jobs import dispatch

    spec = validate(spec)
    job_id = store.add_job(KIND, spec.queue_name, spec.device, asdict(spec), steps=spec.evaluations)
    dispatch(store, spec.device)
    return job_id


def work(job_id: int, spec: EvolveSpec, store: Store) -> dict:
    """The worker's part: what a finished search leaves in the job's result."""
    from snnet.evolve.presets import prepare
    from snnet.evolve.search import search, top1_error
    from snnet.jobs import Cancelled
    from snnet.train import resolve_device

    started = time.perf_counter()
    store.clear_evolve_points(job_id)  # a resumed search starts over: its points must be this run's
    store.update_job(job_id, stage=PREPARING, step=0, steps=spec.evaluations, eta_s=None)
    net, info, sets = prepare(spec.preset, train_config(spec), quiet=False, seed=spec.seed,
                              task_config=task_config(spec))
    if store.get_job(job_id)["cancel"]:
        raise Cancelled()
    net = net.to(resolve_device(spec.device)).eval()
    # what a page needs to name the points while the search runs; the final result repeats it
    known = {"preset": spec.preset, "parent_names": list(net.family.anchor_names), **info}
    store.update_job(job_id, result=known)
    store.update_job(job_id, stage="measuring the parents and their ensemble")
    searching, measured = f"searching ({spec.algorithm})", [0]
    search_started = time.monotonic()

    def on_evaluated(found) -> None:
        store.add_evolve_point(job_id, list(found.genotype), found.error, found.gmacs, found.is_parent)
        if not found.is_parent:
            measured[0] += 1
            per_network = (time.monotonic() - search_started) / measured[0]
            # an upper bound: requests the cache answers cost nothing
            store.update_job(job_id, stage=searching, step=measured[0],
                             eta_s=per_network * max(0, spec.evaluations - measured[0]))
        if store.get_job(job_id)["cancel"]:
            raise Cancelled()

    result = search(net, *sets.search(), budget=spec.evaluations, seed=spec.seed,
                    algorithm=spec.algorithm, on_evaluated=on_evaluated)
    store.update_job(job_id, stage=f"checking the front's {len(result['front'])} networks on the test split", eta_s=None)
    test_set = sets.test()
    result["test_front"] = []
    for entry in result["front"]:
        test_error = top1_error(net, entry["genotype"], *test_set)
        store.set_evolve_test_error(job_id, entry["genotype"], test_error)
        result["test_front"].append({**entry, "error": test_error})
        if store.get_job(job_id)["cancel"]:
            raise Cancelled()
    return {**known, **result, "total_s": time.perf_counter() - started}

