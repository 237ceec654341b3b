"""Audit rules: network."""

from __future__ import annotations

from mosquitto_guard.audit.model import Rule

RULES: list[Rule] = []
