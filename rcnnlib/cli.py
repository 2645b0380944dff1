"""The ``rcnnlib`` command line.

Every user-facing failure is an :class:`~rcnnlib.errors.InputError`: it is
printed as one line (``rcnnlib: error: <file>: <problem>``) and the command
exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rcnnlib.errors import InputError
from rcnnlib.logs import VERBOSE_ENV, configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcnnlib", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show TensorFlow's log lines (silenced by default; or set {VERBOSE_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from rcnnlib.book import runner
    from rcnnlib.forest import baseline
    from rcnnlib.hits import fetch
    from rcnnlib.hits import loader as hits
    from rcnnlib.rcnn import classify, evaluate, train
    from rcnnlib.sim import simulate

    for module in (hits, fetch, runner, simulate, train, evaluate, classify, baseline):
        module.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--verbose", action="store_true")
    # before build_parser(): the subcommand modules may import TensorFlow, which reads its log level once
    configure_logging(verbose=early.parse_known_args(argv)[0].verbose or None)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"rcnnlib: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rcnnlib: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
