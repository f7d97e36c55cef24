"""A readable inventory of a built stack: every resource's type, name and inputs, as YAML.

The committed files in inventory/ are what the stacks declare today; the test compares against them,
so any change to the stack is a diff a reviewer can read. After an intended change, regenerate with
`UPDATE_INVENTORY=1 make test` and commit the files with the change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.infra.harness import StackSnapshot, reveal

INVENTORY_DIR = Path(__file__).resolve().parent / "inventory"
# The image digest changes with every handler edit; the inventory shows where it goes, not its value.
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}")
_HIDDEN_KEYS = {"password"}


def _readable(value: Any, key: str = "") -> Any:
    if key in _HIDDEN_KEYS:
        return "[secret]"
    if isinstance(value, dict):
        return {k: _readable(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_readable(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return _DIGEST.sub("@sha256:<digest of handler/>", value)
    return value


def render(snapshot: StackSnapshot) -> str:
    entries = [
        {"type": resource.type, "name": resource.name, "properties": _readable(reveal(resource.inputs))}
        for resource in sorted(snapshot.resources, key=lambda r: (r.type, r.name))
    ]
    header = ("# Generated from the mocked stack by tests/infra/test_inventory.py; regenerate with\n"
              "# `UPDATE_INVENTORY=1 make test` after an intended change, and review the diff.\n")
    return header + yaml.safe_dump(entries, sort_keys=False, width=120, allow_unicode=True)


def path_for(stack: str) -> Path:
    return INVENTORY_DIR / f"{stack}.yaml"
