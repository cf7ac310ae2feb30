"""Progress on long work: a bar on a terminal, and log lines where no bar shows (the Prefect UI, a redirected run).

tqdm hides its bar when the output is not a terminal (`disable=None`), so a judge stage writing checks for twenty
minutes showed nothing in the Prefect UI. `progress` keeps the bar and also logs each tenth of the work done, with
the time taken and left, on the `components` logger that `ratchet` and prefect.yaml send to the UI.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

log = logging.getLogger(__name__)
Item = TypeVar("Item")
TENTHS = 10


def progress(items: Sequence[Item], desc: str, unit: str) -> Iterator[Item]:
    """`items`, one at a time, with a bar and a log line at each tenth done (after that item's work)."""
    total, started = len(items), time.perf_counter()
    marks = {math.ceil(total * k / TENTHS) for k in range(1, TENTHS + 1)}
    for done, item in enumerate(tqdm(items, desc=desc, unit=unit, leave=False, disable=None), start=1):
        yield item
        if done in marks:
            elapsed = time.perf_counter() - started
            left = elapsed * (total - done) / done
            log.info("%s: %s %d/%d in %s, about %s left", desc, unit, done, total, _clock(elapsed), _clock(left))


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
