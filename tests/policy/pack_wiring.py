"""Run by tests/policy/test_pack.py with the policy pack's own interpreter (policy/.venv): loads the pack
with PolicyPack stubbed out (the real one starts a server and waits for the Pulumi engine), then drives
each policy's validate() as the engine would and prints what it reported, as JSON."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pulumi_policy

captured: dict[str, Any] = {}


class RecordingPack:
    def __init__(self, name: str, enforcement_level: Any, policies: list[Any], **options: Any) -> None:
        captured.update(name=name, level=str(enforcement_level), policies=policies)


pulumi_policy.PolicyPack = RecordingPack  # type: ignore[misc,assignment]
runpy.run_path(str(Path(sys.argv[1])), run_name="__main__")

resource_type, props, urn = json.loads(sys.stdin.read())
reports: dict[str, list[str]] = {}
for policy in captured["policies"]:
    found: list[str] = []
    resource = SimpleNamespace(resource_type=resource_type, props=props, urn=urn, name="r")
    # A stack policy sees every resource of the stack: here, the one resource given.
    args = SimpleNamespace(resources=[resource]) if type(policy).__name__ == "StackValidationPolicy" else resource
    policy.validate(args, lambda message, urn=None, found=found: found.append(message))
    reports[policy.name] = found
print(json.dumps({"name": captured["name"], "level": captured["level"], "reports": reports}))
