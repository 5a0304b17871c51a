"""Loading the modules that add sub-commands to the command line."""

from __future__ import annotations

import argparse
import importlib


def add_command_modules(sub: argparse._SubParsersAction, modules: tuple[str, ...]) -> None:
    """Call ``add_commands(sub)`` of each module; a module that is not part of this install is left out."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.add_commands(sub)
