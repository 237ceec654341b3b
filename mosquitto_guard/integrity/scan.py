"""Record every watched file, in parallel, with an optional progress callback.

Reading and hashing run in a thread pool: `os.read` and `hashlib` release the GIL while they
work, so threads keep several disks and cores busy without the start-up cost of processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from mosquitto_guard.integrity.baseline import Baseline, Entry
from mosquitto_guard.integrity.record import Record, record_file
from mosquitto_guard.integrity.watchlist import WatchedFile

# Called with the number of files recorded since the last call.
Progress = Callable[[int], None]


def default_workers() -> int:
    """Return the default number of workers: the CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def scan(
    watched: list[WatchedFile],
    *,
    workers: int = 1,
    known: Mapping[str, Entry] | None = None,
    progress: Progress | None = None,
) -> Baseline:
    """Record every watched file now and return the records as an unsigned `Baseline`.

    With `known` (the entries of a verified baseline), a regular file whose stat data is
    unchanged keeps its known record without being read; see `record.record_file`.
    """

    def one(item: WatchedFile) -> Record:
        entry = known.get(str(item.path)) if known is not None else None
        record = record_file(item.path, entry.record if entry is not None else None)
        if progress is not None:
            progress(1)
        return record

    with _pool(workers) as mapper:
        records = list(mapper(one, watched))
    entries = {
        str(item.path): Entry(reasons=item.reasons, record=record)
        for item, record in zip(watched, records, strict=True)
    }
    return Baseline(entries=entries)


@contextmanager
def _pool(workers: int) -> Iterator[Callable[..., Iterator[Record]]]:
    if workers <= 1:
        yield map
        return
    with ThreadPoolExecutor(max_workers=workers) as executor:
        yield executor.map
