"""A progress bar on stderr with rate and ETA, shared by the long-running commands."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """A tqdm bar labelled ``label`` (silent when disabled or when there is nothing to do)."""

    def __init__(self, enabled: bool, label: str = "faceveil") -> None:
        self.enabled = enabled
        self.label = label
        self.bar: Any = None

    def start(self, total: int) -> None:
        """Show the bar for ``total`` items."""
        if self.enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc=self.label, dynamic_ncols=True, file=sys.stderr)

    def update(self, item: object = None) -> None:
        """One item done."""
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
