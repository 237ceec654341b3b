"""A progress bar on stderr for long scans, shown only when stderr is a terminal.

Log pipelines and CI read stderr too, so a scan that is not on a terminal shows nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from mosquitto_guard.integrity.scan import Progress

# Fewer files than this are recorded before a bar would be drawn.
MIN_FILES = 200


@contextmanager
def progress_bar(total: int, label: str, *, enabled: bool = True) -> Iterator[Progress | None]:
    """Yield a callback that advances a bar of `total` files, or None when no bar is shown."""
    if not enabled or total < MIN_FILES or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(count: int) -> None:
            bar.advance(task, count)

        yield advance
