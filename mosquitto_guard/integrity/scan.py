"""Record every watched file, in parallel, with an optional progress callback.

A scan has two passes. The first runs `lstat` on every file in the calling thread: with
`known` records (`check --fast`), a file whose stat data is unchanged keeps its record there
and is not read. The second reads and hashes the other files, in the calling thread and
`workers - 1` more threads. `os.read` and `hashlib` release the GIL while they work on large
buffers, so hashing a large file runs beside other work. A small file costs mostly Python
code, which runs under the GIL. So the calling thread takes the small files first and the
other threads take the large ones first, and each then helps with the other kind. Files go
out in chunks
of up to `CHUNK_FILES` files and `CHUNK_BYTES` bytes, because one task per file costs more in
scheduling than an 8 KiB file costs to hash.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from mosquitto_guard.integrity.baseline import Baseline, Entry
from mosquitto_guard.integrity.record import Record, is_unchanged, record_file
from mosquitto_guard.integrity.watchlist import WatchedFile

# Called with the number of files recorded since the last call.
Progress = Callable[[int], None]

CHUNK_FILES = 128
CHUNK_BYTES = 64 * 1024 * 1024
# Files from this size on are hashed first by the helper threads.
LARGE_FILE_BYTES = 1024 * 1024


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
    unchanged keeps its known record without being read; see `record.is_unchanged`.
    """
    records: list[Record | None] = [None] * len(watched)
    unchanged: list[Entry | None] = [None] * len(watched)
    pending: list[tuple[int, int]] = []  # (index, size) of the files to record in full
    for index, item in enumerate(watched):
        entry = known.get(item.name) if known is not None else None
        if entry is not None and is_unchanged(item.name, entry.record):
            # The known entry itself when the reasons are the same, so compare can skip it.
            same = entry.reasons == item.reasons
            unchanged[index] = entry if same else Entry(item.reasons, entry.record)
        else:
            pending.append((index, _size(item)))
    if progress is not None and len(watched) > len(pending):
        progress(len(watched) - len(pending))
    _record_all(watched, pending, records, workers, progress)
    entries: dict[str, Entry] = {}
    for item, entry, record in zip(watched, unchanged, records, strict=True):
        if entry is not None:
            entries[item.name] = entry
        elif record is not None:
            entries[item.name] = Entry(item.reasons, record)
    return Baseline(entries=entries)


def _size(item: WatchedFile) -> int:
    try:
        return os.lstat(item.name).st_size
    except OSError:
        return 0


def _record_all(
    watched: list[WatchedFile],
    pending: list[tuple[int, int]],
    records: list[Record | None],
    workers: int,
    progress: Progress | None,
) -> None:
    def record_chunk(chunk: list[tuple[int, int]]) -> None:
        for index, _ in chunk:
            records[index] = record_file(watched[index].name)
        if progress is not None:
            progress(len(chunk))

    small = deque(_chunks([item for item in pending if item[1] < LARGE_FILE_BYTES]))
    large = deque(_chunks([item for item in pending if item[1] >= LARGE_FILE_BYTES]))

    def drain(first: deque[list[tuple[int, int]]], second: deque[list[tuple[int, int]]]) -> None:
        # deque.popleft is atomic, so threads share the two queues without a lock.
        for queue in (first, second):
            while True:
                try:
                    chunk = queue.popleft()
                except IndexError:
                    break
                record_chunk(chunk)

    if workers <= 1 or not large:
        drain(small, large)
        return
    with ThreadPoolExecutor(max_workers=workers - 1) as executor:
        helpers = [executor.submit(drain, large, small) for _ in range(workers - 1)]
        drain(small, large)
        for helper in helpers:
            helper.result()  # re-raises what a helper raised


def _chunks(pending: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    chunks: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    size = 0
    for item in pending:
        if current and (len(current) >= CHUNK_FILES or size + item[1] > CHUNK_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += item[1]
    if current:
        chunks.append(current)
    return chunks
