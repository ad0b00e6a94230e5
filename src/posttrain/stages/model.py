"""``posttrain model [ALIAS ...]``: materialize embedded model aliases (all of them by default) and print each one's
local folder."""

from __future__ import annotations

import argparse

from posttrain.models.registry import EMBEDDED_MODELS
from posttrain.models.resolve import resolve_model


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain model", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"aliases ({', '.join(EMBEDDED_MODELS)}), folders or hub ids")
    return parser


def main(args: argparse.Namespace) -> int:
    for name in args.names or list(EMBEDDED_MODELS):
        print(resolve_model(name))
    return 0
