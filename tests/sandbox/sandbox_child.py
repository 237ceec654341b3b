"""Running a probe in a forked child that confines itself first, since confinement is permanent.

The child runs `confine`, then the probe, and sends one JSON message back through a pipe: the
confinement's report and the probe's result, or "error" when either raised. Everything a probe
needs must be imported before the fork, because a confined child may no longer be able to read
Python's own files.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import traceback
from collections.abc import Callable
from typing import Any

from mosquitto_guard.errors import HostError


def run_in_child(
    confine: Callable[[], dict[str, Any]],
    probe: Callable[[int], Any],
    timeout: int | None = None,
) -> dict[str, Any]:
    """Run `confine()`, then `probe(report_fd)` in a forked child and return its message.

    The message has "report" and "result" on success, or "error" when the child raised: the
    message of a `HostError`, the traceback of anything else. A probe that execs writes the
    message itself to `report_fd`, which it inherits. `timeout` (seconds) ends a stuck child.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()

    if pid == 0:  # The child never returns to pytest.
        status = 0
        try:
            os.close(read_end)
            if timeout is not None:
                signal.alarm(timeout)
            out: dict[str, Any] = {}
            try:
                out["report"] = confine()
                out["result"] = probe(write_end)
            except HostError as exc:
                out["error"] = str(exc)
            except BaseException:
                out["error"] = traceback.format_exc()
            os.write(write_end, json.dumps(out).encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)

    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)

    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the confined child failed"
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result


def outcome(action: Callable[[], object]) -> str:
    """Run `action` and return "ok", or the errno name of the OSError it raised."""
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"
