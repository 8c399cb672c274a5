"""The ``embedcore`` command: ``info``, ``demo`` and the subcommands other modules register."""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from embedcore._backend import info

    info()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from embedcore._backend import info

    info()
    print("\nembedcore demo: encoding, index and search are not yet available in this build; "
          "ran the backend report above.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print the live backends (native ISA, CUDA, Triton, versions)")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="the main job: bundled model + Wikipedia corpus, index, search")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
