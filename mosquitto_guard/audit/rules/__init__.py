"""The audit rules, one module per area; `all_rules()` lists them in report order.

Each module exports `RULES`, a list of `Rule`. Ids are stable: a rule keeps its id for good,
and a retired id is never reused, so that suppressions and CI baselines keep working.
"""

from __future__ import annotations

from mosquitto_guard.audit.model import Rule


def all_rules() -> list[Rule]:
    """Return every rule, area by area."""
    from mosquitto_guard.audit.rules import (
        files,
        hardening,
        network,
        plugins,
        privileges,
        syntax,
        version,
    )

    rules: list[Rule] = []
    for module in (syntax, plugins, privileges, files, network, hardening, version):
        rules += module.RULES
    ids = [rule.id for rule in rules]
    duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
    if duplicates:
        raise ValueError(f"two audit rules share the id {duplicates[0]}")
    return rules
