"""What training prints: one line at a time on rank 0's stderr, written so that it does not break the
progress bar (tqdm.write). Other ranks stay quiet, so a DDP run prints each line once."""

from __future__ import annotations

import sys

from tqdm import tqdm

from train.engine import distributed as D


def log(msg: str) -> None:
    """One line on rank 0's stderr that does not break the progress bar."""
    if D.is_main():
        tqdm.write(f"[lfd-edge] {msg}", file=sys.stderr)
