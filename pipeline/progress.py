"""Progress bars for long work (extraction, training, scoring, verifying): one look for all."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, *, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr (a silent one when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, dynamic_ncols=True)
