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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcnnlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from rcnnlib import baseline, classify, evaluate, fetch, hits, runner, simulate, train

    for module in (hits, fetch, runner, simulate, train, evaluate, classify, baseline):
        module.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
