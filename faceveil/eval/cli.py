"""``faceveil eval``: detection quality, utility and the privacy/utility trade-off."""

from __future__ import annotations

import argparse

from faceveil.plugins import add_command_modules

SUBCOMMANDS = ("faceveil.eval.detection_cli", "faceveil.eval.utility_cli", "faceveil.eval.tradeoff_cli")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` and its sub-commands."""
    parser = sub.add_parser(
        "eval",
        help="measure detection quality, utility and the trade-off",
        description="Measure both sides: how many faces are hidden and what a model loses.",
    )
    eval_sub = parser.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    add_command_modules(eval_sub, SUBCOMMANDS)
