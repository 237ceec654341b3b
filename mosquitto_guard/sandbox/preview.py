"""Deriving the sandbox of a launch without launching: for `sandbox-plan` and `systemd-unit`."""

from __future__ import annotations

import os
from pathlib import Path

from mosquitto_guard.launch.runner import LaunchPlan, prepare_launch
from mosquitto_guard.policy.model import Policy


def preview_launch(policy: Policy, broker: Path, config: Path) -> LaunchPlan:
    """Run the launch checklist for `broker -c config` with the sandbox derived, start nothing.

    The problems found stay in the returned plan. The sealed copies made on the way are closed.
    """
    plan = prepare_launch(policy, ["-c", str(config)], os.environ, broker=broker, sandbox=True)
    for fd in plan.inherit_fds:
        os.close(fd)
    plan.inherit_fds = []
    return plan
