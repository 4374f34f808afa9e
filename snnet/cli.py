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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m snnet", description="Stitchable Neural Networks")
    commands = parser.add_subparsers(dest="command", required=True)

    stitches = commands.add_parser("stitches", help="list a family's configurations with their cost")
    _add_space_arguments(stitches)
    stitches.add_argument("--json", action="store_true", help="print one JSON array")
    stitches.set_defaults(run=cmd_stitches)
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
