"""Command line: python -m snnet <command>."""
import argparse
import json
import sys
from typing import Optional, Sequence

from snnet.errors import SnnetError


def _add_space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", required=True, help="family name, e.g. deit or mini")
    parser.add_argument("--kernel", type=int, default=2, help="sliding-window kernel (default 2)")
    parser.add_argument("--stride", type=int, default=1, help="sliding-window stride (default 1)")
    parser.add_argument("--direction", default="fast-to-slow", choices=["fast-to-slow", "slow-to-fast"])


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


def _print_rows(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    print("  ".join(f"{title:>{width}}" for title, _, width in columns))
    for row in rows:
        cells = []
        for title, key, width in columns:
            value = row.get(key)
            spec = ".2f" if isinstance(value, float) else ""
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

    rows = results(load_net(args.family, args.weights), args.split, show_bar=not args.json)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    _print_rows([r for r in rows if r["kind"] != "zoo"], [
        ("id", "id", "4"), ("kind", "kind", "6"), ("front", "front", "12"), ("back", "back", "12"),
        ("j", "front_block", "3"), ("k", "back_block", "3"), ("GMACs", "gmacs", "7"),
        ("params_m", "params_m", "8"), ("top1", "top1", "6"), ("top5", "top5", "6"),
        ("latency_ms", "latency_ms", "10")])
    zoo = [r for r in rows if r["kind"] == "zoo"]
    if zoo:
        print("\nzoo (trained alone)")
        _print_rows(zoo, [("name", "name", "24"), ("GMACs", "gmacs", "7"), ("params_m", "params_m", "8"),
                          ("top1", "top1", "6")])


def cmd_evaluate(args: argparse.Namespace) -> None:
    from snnet.api import eval_settings, load_net
    from snnet.data import eval_set
    from snnet.evaluate import evaluate_space, space_latency
    from snnet.store import Store
    from snnet.weights import weights_hash

    net = load_net(args.family, args.weights, args.device)
    ids = _parse_ids(args.stitches)
    images, labels = eval_set(net.family, args.split)
    measured = evaluate_space(net, images, labels, ids, args.batch_size, show_bar=True)
    sample = images[:1].to(next(net.parameters()).device)
    for stitch_id, latency in space_latency(net, sample, list(measured)).items():
        measured[stitch_id]["latency_ms"] = latency
    Store().put_metrics(net.family.name, weights_hash(net), args.split, eval_settings(net, args.split), measured)
    rows = [{"id": i, **m} for i, m in measured.items()]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        _print_rows(rows, [("id", "id", "4"), ("top1", "top1", "6"), ("top5", "top5", "6"),
                           ("loss", "loss", "6"), ("latency_ms", "latency_ms", "10")])


def cmd_predict(args: argparse.Namespace) -> None:
    from snnet.api import load_net, predict

    predictions = predict(load_net(args.family, args.weights), args.stitch, args.images)
    if args.json:
        print(json.dumps(predictions, indent=1))
        return
    for item in predictions:
        guesses = ", ".join(f"{p['label']} {100 * p['prob']:.1f}%" for p in item["top5"])
        print(f"{item['image']}: {guesses}  [stitch {item['stitch']}, {item['latency_ms']:.1f} ms]")


def cmd_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    import torch

    from snnet.data import train_data
    from snnet.families import get_family
    from snnet.train import Progress, TrainConfig, train

    family = get_family(args.family)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, anchor_lr=args.anchor_lr,
                         warmup_steps=min(args.warmup_steps, args.steps), sampling=args.sampling,
                         stitches=_parse_ids(args.stitches), seed=args.seed, device=args.device, bf16=args.bf16)
    torch.manual_seed(args.seed)
    if args.model:
        model = family.build_model(family.model_spec(args.model))
    else:
        from snnet.api import load_net

        model = load_net(args.family, args.weights)
    report = (lambda p: print(p.json(), flush=True)) if args.progress_json else None
    summary = train(model, train_data(family, args.seed), config, Path(args.out), progress=report,
                    show_bar=not args.progress_json)
    if report:
        print(Progress(config.steps, config.steps, summary["final_loss"], 0.0, 0.0, 0.0, done=True).json())
    else:
        print(f"wrote {args.out}/model.safetensors (final loss {summary['final_loss']:.3f})")


def cmd_build_default(args: argparse.Namespace) -> None:
    from pathlib import Path

    from snnet.default import build_default

    build_default(Path(args.work), jobs=args.jobs)


def cmd_bench(args: argparse.Namespace) -> None:
    from snnet.bench import run

    print(run(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m snnet", description="Stitchable Neural Networks")
    commands = parser.add_subparsers(dest="command", required=True)

    stitches = commands.add_parser("stitches", help="list a family's configurations with their cost")
    _add_space_arguments(stitches)
    stitches.add_argument("--json", action="store_true", help="print one JSON array")
    stitches.set_defaults(run=cmd_stitches)

    results = commands.add_parser("results", help="accuracy, cost and latency of every configuration, and the zoo")
    results.add_argument("--family", required=True)
    results.add_argument("--weights", help="StitchableNet weights (.safetensors); default: the shipped ones")
    results.add_argument("--split", default="test", choices=["val", "test"])
    results.add_argument("--json", action="store_true")
    results.set_defaults(run=cmd_results)

    evaluate = commands.add_parser("evaluate", help="evaluate configurations on a split and cache the metrics")
    evaluate.add_argument("--family", required=True)
    evaluate.add_argument("--weights")
    evaluate.add_argument("--split", default="test", choices=["val", "test"])
    evaluate.add_argument("--stitches", help="comma-separated ids (default: all)")
    evaluate.add_argument("--batch-size", type=int, default=256)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict", help="top-5 classes of images through one configuration")
    predict.add_argument("--family", required=True)
    predict.add_argument("--weights")
    predict.add_argument("--stitch", type=int, required=True)
    predict.add_argument("images", nargs="+", metavar="IMAGE")
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
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 autocast (default: on for CUDA, off for CPU)")
    train.add_argument("--progress-json", action="store_true", help="JSON lines of progress on stdout")
    train.set_defaults(run=cmd_train)

    build = commands.add_parser("build-default", help="train and evaluate the embedded default from scratch")
    build.add_argument("--work", default="runs/default", help="work folder; a rerun resumes from it")
    build.add_argument("--jobs", type=int, default=2, help="models trained at once")
    build.set_defaults(run=cmd_build_default)

    bench = commands.add_parser("bench", help="measure speed and fit figures (BENCHMARKS.md)")
    bench.add_argument("--out", help="also write the markdown report to this file")
    bench.set_defaults(run=cmd_bench)
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
