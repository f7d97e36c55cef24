"""The policy pack Pulumi runs wires every rule, mandatory, and reports what the rules find.

It runs in the pack's own environment (policy/.venv, made by `make policy-venv`, which `make test`
prepares), as `pulumi preview --policy-pack policy` would.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from policy.rules import RULES, SERVICE, STACK_RULES

REPO = Path(__file__).resolve().parents[2]
POLICY_PYTHON = REPO / "policy" / ".venv" / "bin" / "python"


def run_pack(resource_type: str, props: dict[str, Any], urn: str) -> dict[str, Any]:
    if not POLICY_PYTHON.exists():
        pytest.fail("the policy pack's environment is missing: run `make policy-venv` (make test does)")
    result = subprocess.run([str(POLICY_PYTHON), str(Path(__file__).parent / "pack_wiring.py"), str(REPO / "policy")],
                            input=json.dumps([resource_type, props, urn]), capture_output=True, text=True,
                            timeout=60, cwd=REPO / "policy")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_pack_runs_every_rule_as_mandatory_and_reports_violations() -> None:
    unsafe = {"invokerIamDisabled": True, "deletionProtection": False,
              "template": {"containers": [{"image": "repo/handler:latest"}]}}
    outcome = run_pack(SERVICE, unsafe, "urn:pulumi:prod::tasklane::gcp:cloudrunv2/service:Service::svc")
    assert outcome["name"] == "tasklane-guardrails"
    assert "MANDATORY" in outcome["level"].upper()
    assert sorted(outcome["reports"]) == sorted(rule.name for rule in (*RULES, *STACK_RULES))
    reported = {name for name, messages in outcome["reports"].items() if messages}
    assert reported == {"no-public-invoker", "no-default-compute-account", "image-pinned-by-digest",
                        "prod-deletion-protection", "prod-dead-letter-alert"}


def test_a_safe_resource_reports_nothing() -> None:
    safe = {"invokerIamDisabled": False, "deletionProtection": True, "template": {
        "serviceAccount": "runtime@p.iam.gserviceaccount.com", "timeout": "600s",
        "containers": [{"image": "r/handler@sha256:" + "a" * 64,
                        "envs": [{"name": "TASKLANE_TASK_DISPATCH_DEADLINE", "value": "600s"}]}]}}
    outcome = run_pack(SERVICE, safe, "urn:pulumi:dev::tasklane::gcp:cloudrunv2/service:Service::svc")
    assert all(messages == [] for messages in outcome["reports"].values())
