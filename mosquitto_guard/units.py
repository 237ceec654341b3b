"""The systemd unit directories the broker's unit may be in, in their order of precedence.

A unit file in an earlier directory overrides one of the same name in a later one, and the
drop-in directories `NAME.d` of every directory apply.
"""

from __future__ import annotations

from pathlib import Path

SERVICE_UNIT_NAME = "mosquitto.service"
UNIT_DIRECTORIES = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)
