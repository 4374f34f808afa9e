"""Command line: python -m snnet <command>."""
import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from snnet.errors import SnnetError


def _add_space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", required=True, help="family name, e.g. deit or mini")
    parser.add_argument("--kernel", type=int, default=2, help="sliding-window kernel (default 2)")
    parser.add_argument("--stride", type=int, default=1, help="sliding-window stride (default 1)")
    parser.add_argument("--direction", default="fast-to-slow", choices=["fast-to-slow", "slow-to-fast"])


OFFICIAL_COMPAT_HELP = ("stitched paths skip the back anchor's final norm, as the SN-Net reference code "
                        "(and its released weights) do")


def _add_imagenet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="ImageNet-style folder of an ImageNet family (DIR/<split>/<wnid>/*.JPEG; "
                                       "default $SNNET_IMAGENET)")
    parser.add_argument("--official-compat", action="store_true", help=OFFICIAL_COMPAT_HELP)


def _add_measured_network_arguments(parser: argparse.ArgumentParser) -> None:
    """Which network and which evaluation: what `results` and `evaluate` share."""
    parser.add_argument("--family", required=True)
    parser.add_argument("--weights", help="StitchableNet weights (.safetensors); default: the shipped ones")
    parser.add_argument("--split", choices=["val", "test"], help="default: test (digits), val (ImageNet)")
    _add_imagenet_arguments(parser)


def _format_table(rows: list[dict]) -> str:
    header = f"{'id':>4}  {'kind':<6}  {'front':<14}  {'back':<14}  {'blocks':>7}  {'layer':>5}  {'GMACs':>8}  {'params (M)':>10}"
    lines = [header, "-" * len(header)]
    for row in rows:
        blocks = "" if row["kind"] == "anchor" else f"{row['front_block']}->{row['back_block']}"
        layer = "" if row["layer"] is None else str(row["layer"])
        lines.append(
            f"{row['id']:>4}  {row['kind']:<6}  {row['front']:<14}  {row['back']:<14}  {blocks:>7}"
            f"  {layer:>5}  {row['gmacs']:>8.3f}  {row['params_m']:>10.2f}"
        )
    return "\n".join(lines)


def cmd_stitches(args: argparse.Namespace) -> None:
    from snnet.cost import space_rows
    from snnet.families import get_family

    family = get_family(args.family)
    rows = space_rows(family, family.space(args.kernel, args.stride, args.direction))
    print(json.dumps(rows, indent=1) if args.json else _format_table(rows))


def cmd_families(args: argparse.Namespace) -> None:
    from snnet.api import family_rows

    rows = family_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for row in rows:
        weights = "weights here" if row["weights"] else "no weights here"
        print(f"{row['name']:<12}  {row['task']:<8}  {row['configurations']:>3} configurations  {weights:<15}  "
              f"{', '.join(row['anchors'])}\n{'':14}{row['description']}")


def _print_rows(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    print("  ".join(f"{title:>{width}}" for title, _, width in columns))
    for row in rows:
        cells = []
        for title, key, width in columns:
            value = row.get(key)
            # costs keep four significant digits: the embedded families' are a few MMACs
            spec = (".4g" if key in ("gmacs", "params_m") else ".2f") if isinstance(value, float) else ""
            cells.append(f"{'' if value is None else format(value, spec):>{width}}")
        print("  ".join(cells))


def _parse_ids(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SnnetError(f"--stitches takes comma-separated ids such as 0,3,24, got {text!r}") from None


def cmd_results(args: argparse.Namespace) -> None:
    from snnet.api import load_net, results

    net = load_net(args.family, args.weights, official_compat=args.official_compat)
    rows = results(net, args.split, show_bar=not args.json, data=args.data, zoo_csv=args.zoo_csv)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    _print_rows([r for r in rows if r["kind"] != "zoo"], [
        ("id", "id", "4"), ("kind", "kind", "6"), ("front", "front", "12"), ("back", "back", "12"),
        ("j", "front_block", "3"), ("k", "back_block", "3"), ("GMACs", "gmacs", "9"),
        ("params_m", "params_m", "8"), ("top1", "top1", "6"), ("top5", "top5", "6"),
        ("latency_ms", "latency_ms", "10")])
    zoo = [r for r in rows if r["kind"] == "zoo"]
    if zoo:
        print(f"\nzoo ({zoo[0].get('source') or 'trained alone'})")
        _print_rows(zoo, [("name", "name", "44"), ("GMACs", "gmacs", "9"), ("params_m", "params_m", "8"),
                          ("top1", "top1", "6")])


def cmd_evaluate(args: argparse.Namespace) -> None:
    import torch

    from snnet.api import evaluate, evaluation_folder, load_net
    from snnet.families import get_family
    from snnet.train import distributed_context, resolve_device

    # under torchrun every rank evaluates its shard of the folder; rank 0 prints and stores
    rank, world, local_rank = distributed_context()
    device = resolve_device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    net = load_net(args.family, args.weights, device, official_compat=args.official_compat)
    split = args.split or get_family(args.family).task.default_split
    dataset = evaluation_folder(net, split, args.data)
    measured = evaluate(net, split, _parse_ids(args.stitches), dataset=dataset, batch_size=args.batch_size,
                        workers=args.workers, bf16=args.bf16, show_bar=not args.json)
    if rank != 0:
        return
    rows = [{"id": i, **m} for i, m in measured.items()]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print_rows(rows, [("id", "id", "4"), ("top1", "top1", "6"), ("top5", "top5", "6"),
                           ("loss", "loss", "6"), ("latency_ms", "latency_ms", "10")])


def cmd_predict(args: argparse.Namespace) -> None:
    from snnet.api import load_net, predict

    net = load_net(args.family, args.weights, official_compat=args.official_compat)
    predictions = predict(net, args.stitch, args.images)
    if args.json:
        print(json.dumps(predictions, indent=1))
        return
    for item in predictions:
        guesses = ", ".join(f"{p['label']} {100 * p['prob']:.1f}%" for p in item["top5"])
        print(f"{item['image']}: {guesses}  [stitch {item['stitch']}, {item['latency_ms']:.1f} ms]")


def cmd_train(args: argparse.Namespace) -> None:
    import torch

    from snnet.families import get_family
    from snnet.train import Progress, TrainConfig, train

    family = get_family(args.family)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, anchor_lr=args.anchor_lr,
                         warmup_steps=min(args.warmup_steps, args.steps), sampling=args.sampling,
                         stitches=_parse_ids(args.stitches), seed=args.seed, device=args.device, bf16=args.bf16,
                         sync_stitch=args.sync_stitch, workers=args.workers, distill=args.distill,
                         anchor_share=args.anchor_share)
    torch.manual_seed(args.seed)
    if args.model:
        model = family.build_model(family.model_spec(args.model))
    else:
        from snnet.api import load_net

        model = load_net(args.family, args.weights, official_compat=args.official_compat)
    report = (lambda p: print(p.json(), flush=True)) if args.progress_json else None
    summary = train(model, family.task.train_data(family, args.seed, args.data), config, Path(args.out), progress=report,
                    show_bar=not args.progress_json)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_rank() != 0:
        return  # rank 0 alone reports: lines from several ranks would interleave on one stdout
    if report:
        print(Progress(config.steps, config.steps, summary["final_loss"], 0.0, 0.0, 0.0, done=True).json())
    else:
        print(f"wrote {args.out}/model.safetensors (final loss {summary['final_loss']:.3f})")


def cmd_convert_official(args: argparse.Namespace) -> None:
    from snnet.checkpoints import convert_official

    summary = convert_official(args.source, args.out, args.family)
    print(f"wrote {args.out}: {summary['tensors']} tensors, {summary['stitching_layers']} stitching layers "
          f"({summary['seconds']:.1f} s)")


def cmd_init(args: argparse.Namespace) -> None:
    from snnet.checkpoints import init_from_anchors

    residuals = init_from_anchors(args.family, args.data, args.out, args.weights, args.samples, args.batch_size)
    print(f"wrote {args.out}: {len(residuals)} stitches initialised by least squares, mean relative residual "
          f"{sum(residuals.values()) / max(1, len(residuals)):.3f}")


def cmd_zoo(args: argparse.Namespace) -> None:
    from snnet.zoo import fetch_results, timm_zoo

    rows = timm_zoo(fetch_results(args.download) if args.download else args.csv)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    _print_rows(rows, [("name", "name", "44"), ("GMACs", "gmacs", "9"), ("params_m", "params_m", "8"),
                       ("top1", "top1", "6"), ("top5", "top5", "6")])


def cmd_build_default(args: argparse.Namespace) -> None:
    from snnet.default import build_default

    build_default(args.family, Path(args.work) if args.work else None, jobs=args.jobs,
                  reuse_alone=args.reuse_alone)


def cmd_job(args: argparse.Namespace) -> None:
    from snnet import jobs
    from snnet.store import Store

    store = Store(args.store)
    if args.action == "run":
        jobs.run_job(args.job_id, store)
    elif args.action == "cancel":
        jobs.cancel(store, args.job_id)
    elif args.action == "resume":
        jobs.resume(store, args.job_id)
        print(f"job {args.job_id} queued again")
    elif args.action == "submit":
        spec = jobs.JobSpec(family=args.family, weights=args.weights, stitches=_parse_ids(args.stitches),
                            steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            anchor_lr=args.anchor_lr, distill=args.distill, anchor_share=args.anchor_share,
                            device=args.device, split=args.split, seed=args.seed,
                            official_compat=args.official_compat, data=args.data)
        job_id = jobs.submit(spec, store)
        print(json.dumps({"id": job_id}) if args.json else f"job {job_id} queued")
    elif args.json:
        jobs.refresh(store)
        print(json.dumps([_job_json(job) for job in store.list_jobs()], indent=1))
    else:
        jobs.refresh(store)
        for job in store.list_jobs():
            detail = job["message"] or job["stage"] or ""
            print(f"{job['id']:>4}  {job['kind']:<8}  {job['family']:<8}  {job['device']:<6}  {job['status']:<9}  "
                  f"{job['step']}/{job['steps']}  {detail}")


def _job_json(job: dict) -> dict:
    """What a script needs of a job; the weights and their hash once it is done."""
    row = {key: job[key] for key in ("id", "kind", "family", "device", "status", "stage", "step", "steps", "pid",
                                     "message")}
    if job["status"] == "done" and job["result"]:
        row.update(weights=job["result"]["weights"], weights_hash=job["result"]["weights_hash"])
    return row


def cmd_bench(args: argparse.Namespace) -> None:
    from snnet.bench import REPORT, run, write_report

    text, figures = run(quick=args.quick)
    if not args.quick:
        write_report(text, Path(args.out) if args.out else REPORT)
    print(json.dumps(figures, indent=1) if args.json else text)


def cmd_evolve(args: argparse.Namespace) -> None:
    from snnet.evolve import parallel
    from snnet.evolve.presets import run_preset

    parallel.check(args.workers, args.scheduler)
    result = run_preset(args.preset, args.evaluations, args.seed, args.algorithm, quiet=args.json,
                        workers=args.workers, scheduler=args.scheduler, weights=args.weights, data=args.data,
                        **({"images": args.images} if args.images else {}))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    matching = result["matching"]
    print(f"matched points {matching['pairs']}, rejected {matching['rejected']}")
    print(f"{result['algorithm']}: {result['requests']} requests, {result['evaluations']} evaluated, "
          f"{result['skipped_inactive']} answered from the cache ({result['total_s']:.0f} s)")
    test_errors = {tuple(e["genotype"]): e["error"] for e in result["test_front"]}
    parents = {tuple(e["genotype"]) for e in result["front"] if e["is_parent"]}
    dominating = {tuple(g) for g in result["dominates_parent"]}
    new = {tuple(g) for g in result["no_parent_dominates"]}

    def kind(genotype: tuple) -> str:
        if genotype in parents:
            return "parent" if genotype[-1] < 2 else "ensemble"
        return "dominates a parent" if genotype in dominating else "no parent dominates it" if genotype in new else ""

    rows = [{**entry, "genotype": " ".join(map(str, entry["genotype"])), "gmacs": f"{entry['gmacs']:.4f}",
             "test_error": test_errors[tuple(entry["genotype"])], "kind": kind(tuple(entry["genotype"]))}
            for entry in result["front"]]
    print("Pareto front (val error; test error as a check)")
    _print_rows(rows, [("genotype", "genotype", "16"), ("GMACs", "gmacs", "8"), ("error", "error", "6"),
                       ("test_error", "test_error", "10"), ("kind", "kind", "22")])


def cmd_export(args: argparse.Namespace) -> None:
    from snnet.api import load_net
    from snnet.export import INPUT_NAME, OUTPUT_NAME, check_format, export, path_net

    check_format(args.format)  # before the network loads
    net = load_net(args.family, args.weights, official_compat=args.official_compat)
    out = export(net, args.stitch, args.format, Path(args.out))
    family = net.family
    params_m = sum(p.numel() for p in path_net(net, args.stitch).parameters()) / 1e6
    print(f"wrote {out} ({args.format}, {out.stat().st_size / 1e6:.2f} MB): configuration {args.stitch} of "
          f"{family.name}, {params_m:.4g} M parameters; input '{INPUT_NAME}' N x "
          f"{' x '.join(map(str, family.input_size))}, output '{OUTPUT_NAME}' N x {family.num_classes}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m snnet", description="Stitchable Neural Networks")
    commands = parser.add_subparsers(dest="command", required=True)

    stitches = commands.add_parser("stitches", help="list a family's configurations with their cost")
    _add_space_arguments(stitches)
    stitches.add_argument("--json", action="store_true", help="print one JSON array")
    stitches.set_defaults(run=cmd_stitches)

    families = commands.add_parser("families", help="every family: anchors, task, configurations, weights")
    families.add_argument("--json", action="store_true", help="print one JSON array")
    families.set_defaults(run=cmd_families)

    results = commands.add_parser("results", help="accuracy, cost and latency of every configuration, and the zoo")
    _add_measured_network_arguments(results)
    results.add_argument("--zoo-csv", help="timm results CSV for the zoo of an ImageNet family (default: curated)")
    results.add_argument("--json", action="store_true")
    results.set_defaults(run=cmd_results)

    evaluate = commands.add_parser("evaluate", help="evaluate configurations on a split and cache the metrics")
    _add_measured_network_arguments(evaluate)
    evaluate.add_argument("--stitches", help="comma-separated ids (default: all)")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--workers", type=int, default=4, help="DataLoader processes for an image folder")
    evaluate.add_argument("--bf16", action="store_true", help="bf16 autocast (cached apart from fp32 numbers)")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="top-5 classes of images through one configuration")
    predict.add_argument("--family", required=True)
    predict.add_argument("--weights")
    predict.add_argument("--stitch", type=int, required=True)
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--official-compat", action="store_true", help=OFFICIAL_COMPAT_HELP)
    predict.add_argument("--json", action="store_true")
    predict.set_defaults(run=cmd_predict)

    train = commands.add_parser("train", help="train one model from scratch (--model) or SN-Net (default)")
    train.add_argument("--family", required=True)
    train.add_argument("--model", help="an anchor or zoo model to train alone from scratch")
    train.add_argument("--weights", help="SN-Net: StitchableNet weights to start from (default: shipped)")
    train.add_argument("--out", required=True, help="run folder: checkpoint.pt, model.safetensors")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=1e-3, help="single model, or SN-Net's stitching layers")
    train.add_argument("--anchor-lr", type=float, default=1e-4, help="SN-Net's anchors")
    train.add_argument("--warmup-steps", type=int, default=150)
    train.add_argument("--sampling", default="uniform", choices=["uniform", "flops"])
    train.add_argument("--stitches", help="SN-Net: comma-separated ids to sample from (default: all)")
    train.add_argument("--distill", type=float, default=0.0,
                       help="SN-Net: weight of distillation from the largest anchor as the run begins (0: labels only)")
    train.add_argument("--anchor-share", type=float, default=None,
                       help="SN-Net: share of the steps that train an anchor on its own (default: sampled as any)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 autocast (default: on for CUDA, off for CPU)")
    _add_imagenet_arguments(train)
    train.add_argument("--sync-stitch", action="store_true",
                       help="under torchrun, all ranks train the same sampled configuration (default: one per rank)")
    train.add_argument("--workers", type=int, default=4, help="DataLoader processes for an image folder")
    train.add_argument("--progress-json", action="store_true", help="JSON lines of progress on stdout")
    train.set_defaults(run=cmd_train)

    convert = commands.add_parser("convert-official", help="import a released SN-Net checkpoint (snnet_deit.pth)")
    convert.add_argument("source", metavar="SRC", help="the released .pth (read weights-only)")
    convert.add_argument("--out", required=True, help="our .safetensors, for --weights")
    convert.add_argument("--family", default="deit")
    convert.set_defaults(run=cmd_convert_official)

    init = commands.add_parser("init", help="SN-Net from the anchors' timm weights, stitching layers by least squares")
    init.add_argument("--family", required=True)
    init.add_argument("--data", help="image folder (DIR with train/<wnid>/*.JPEG, or that folder); "
                                     "not needed by the embedded digits families")
    init.add_argument("--weights", help="an anchors' weights folder (<timm arch or anchor name>.safetensors or "
                                        ".pth); default: checkpoints/<family>/ and its zoo/, then the hub")
    init.add_argument("--out", required=True, help="StitchableNet weights to write (.safetensors)")
    init.add_argument("--samples", type=int, default=256, help="training images for the least-squares fit")
    init.add_argument("--batch-size", type=int, default=32)
    init.set_defaults(run=cmd_init)

    zoo = commands.add_parser("zoo", help="published ImageNet figures of timm models (the zoo beside the curve)")
    zoo.add_argument("--csv", help="timm's results-imagenet.csv (GMACs from a benchmark-infer-*.csv beside it)")
    zoo.add_argument("--download", metavar="DIR", help="download timm's results and benchmark CSVs into DIR first")
    zoo.add_argument("--json", action="store_true")
    zoo.set_defaults(run=cmd_zoo)

    build = commands.add_parser("build-default", help="train and evaluate an embedded family from scratch")
    build.add_argument("--family", default="mini", help="mini (the default) or mini-resnet")
    build.add_argument("--work", help="work folder; a rerun resumes from it (default runs/default[/FAMILY])")
    build.add_argument("--jobs", type=int, default=2, help="models trained at once")
    build.add_argument("--reuse-alone", action="store_true",
                       help="take the networks trained alone from checkpoints/FAMILY when the same recipe made "
                            "them, and train SN-Net only")
    build.set_defaults(run=cmd_build_default)

    job = commands.add_parser("job", help="background fine-tunes and evaluations (what the app launches)")
    job.add_argument("--store", help="metrics and jobs database (default: $SNNET_HOME/store.sqlite)")
    actions = job.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="all jobs, newest first").add_argument(
        "--json", action="store_true", help="one JSON array of jobs (id, kind, status, step, steps, pid, message, ...)")
    for action, text in [("run", "run a claimed job in this process (what a worker does)"), ("cancel", "stop a job"),
                         ("resume", "queue a failed or cancelled job again; a fine-tune goes on from its checkpoint")]:
        actions.add_parser(action, help=text).add_argument("job_id", type=int)
    submit = actions.add_parser("submit", help="queue a fine-tune (or, with --steps 0, an evaluation)")
    submit.add_argument("--json", action="store_true", help='print {"id": N}')
    submit.add_argument("--family", required=True)
    submit.add_argument("--weights", help="StitchableNet weights to start from (default: shipped)")
    submit.add_argument("--stitches", help="comma-separated ids (default: all)")
    submit.add_argument("--steps", type=int, default=200)
    submit.add_argument("--epochs", type=float, help="length in passes over the training data, instead of --steps")
    submit.add_argument("--batch-size", type=int, default=64)
    submit.add_argument("--lr", type=float, default=1e-3, help="stitching layers")
    submit.add_argument("--anchor-lr", type=float, default=1e-4)
    submit.add_argument("--distill", type=float, default=0.0, help="as for train")
    submit.add_argument("--anchor-share", type=float, default=None, help="as for train")
    submit.add_argument("--device", default="cpu")
    submit.add_argument("--split", choices=["val", "test"], help="default: test for digits, val for ImageNet")
    submit.add_argument("--seed", type=int, default=0)
    submit.add_argument("--official-compat", action="store_true", help=OFFICIAL_COMPAT_HELP)
    submit.add_argument("--data", help="ImageNet families: the folder with train/ and val/")
    job.set_defaults(run=cmd_job)

    bench = commands.add_parser("bench", help="measure speed and fit figures (BENCHMARKS.md)")
    bench.add_argument("--out", help="the markdown report goes here, above the part kept by hand (default: BENCHMARKS.md)")
    bench.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    bench.add_argument("--quick", action="store_true", help="a small setting only, written nowhere (for tests)")
    bench.set_defaults(run=cmd_bench)

    evolve = commands.add_parser("evolve", help="recombine two parents of different architectures and search "
                                                "their offspring (stitching for neuroevolution)")
    evolve.add_argument("--preset", default="mini", choices=["mini", "resnet50-resnext50"],
                        help="mini: the mini ViT and the mini ResNet of the digits task, shipped weights; "
                             "resnet50-resnext50: timm's ResNet-50 and ResNeXt-50 32x4d on an ImageNet folder")
    evolve.add_argument("--weights", type=Path, metavar="DIR",
                        help="resnet50-resnext50: the folder holding resnet50.safetensors and "
                             "resnext50_32x4d.safetensors (timm's ImageNet weights; default: "
                             "checkpoints/resnet50-resnext50/, then the hub's cache)")
    evolve.add_argument("--data", metavar="DIR", help="resnet50-resnext50: the ImageNet folder (train/ and val/; "
                                                     "default $SNNET_IMAGENET)")
    evolve.add_argument("--images", type=int,
                        help="resnet50-resnext50: images per split (stitch training, search, test; default 1024)")
    evolve.add_argument("--evaluations", type=int, default=300, help="genotype requests of the search (default 300)")
    evolve.add_argument("--seed", type=int, default=0)
    evolve.add_argument("--algorithm", default="nsga2", choices=["nsga2", "random"],
                        help="NSGA-II, or random search as its baseline")
    evolve.add_argument("--workers", type=int, default=1,
                        help="local processes that evaluate offspring side by side (default 1: this process)")
    evolve.add_argument("--scheduler", metavar="ADDRESS",
                        help="evaluate on the Dask cluster of this scheduler (e.g. tcp://10.0.0.5:8786); "
                             "its workers need snnet installed")
    evolve.add_argument("--json", action="store_true")
    evolve.set_defaults(run=cmd_evolve)

    export = commands.add_parser("export", help="write one configuration as a network of its own (ONNX, "
                                                "TorchScript or safetensors), without the parts it does not run")
    export.add_argument("--family", required=True)
    export.add_argument("--weights", help="StitchableNet weights (.safetensors); default: the shipped ones")
    export.add_argument("--stitch", type=int, required=True, help="configuration id (python -m snnet stitches)")
    # no argparse choices, which answer with a usage block: an unknown format is the backend's one line
    export.add_argument("--format", required=True, help="onnx, torchscript or safetensors")
    export.add_argument("--out", required=True, help="the file to write")
    export.add_argument("--official-compat", action="store_true", help=OFFICIAL_COMPAT_HELP)
    export.set_defaults(run=cmd_export)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except SnnetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
    return 0
