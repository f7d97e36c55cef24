"""The GitOps path: the workflows lint clean, and the delivery graph is what the README promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.harness import stack_names

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent


def workflow(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((WORKFLOWS / name).read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML reads the key `on` as True
    return dict(loaded)


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [step for step in job["steps"] if str(step.get("uses", "")).startswith(action + "@")]


def test_workflows_match_githubs_schema() -> None:
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             *map(str, sorted(WORKFLOWS.glob("*.yml")))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_actionlint() -> None:
    result = subprocess.run([str(BIN / "actionlint"), *map(str, sorted(WORKFLOWS.glob("*.yml")))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["pull-request.yml", "deploy.yml", "drift.yml"])
def test_every_action_is_pinned_to_a_version_and_permissions_are_least(name: str) -> None:
    flow = workflow(name)
    assert flow["permissions"] == {}, "nothing by default; each job asks for what it needs"
    for job_name, job in flow["jobs"].items():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+", step["uses"]), step["uses"]
        granted = job["permissions"]
        assert granted.get("contents") == "read", job_name
        needs_cloud = bool(steps_using(job, "google-github-actions/auth"))
        assert (granted.get("id-token") == "write") == needs_cloud, f"{job_name}: id-token only to reach Google"
        assert set(granted) <= {"contents", "id-token", "pull-requests"}, job_name
        assert "write-all" not in str(granted)
        for auth in steps_using(job, "google-github-actions/auth"):
            assert set(auth["with"]) == {"workload_identity_provider", "service_account"}, "no JSON keys"


def test_pull_requests_run_the_tests_then_preview_every_stack_with_the_guardrails() -> None:
    flow = workflow("pull-request.yml")
    assert set(flow["on"]) == {"pull_request"}
    jobs = flow["jobs"]
    assert "make test" in [step.get("run") for step in jobs["test"]["steps"]]
    preview = jobs["preview"]
    assert preview["needs"] == "test"
    assert sorted(entry["stack"] for entry in preview["strategy"]["matrix"]["include"]) == stack_names()
    [pulumi] = steps_using(preview, "pulumi/actions")
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["comment-on-pr"] is True
    assert preview["permissions"]["pull-requests"] == "write", "to comment the preview"


def test_main_deploys_dev_then_prod_behind_the_prod_environment() -> None:
    flow = workflow("deploy.yml")
    assert flow["on"]["push"]["branches"] == ["main"]
    jobs = flow["jobs"]
    assert (jobs["deploy-dev"]["needs"], jobs["deploy-prod"]["needs"]) == ("test", "deploy-dev")
    assert (jobs["deploy-dev"]["environment"], jobs["deploy-prod"]["environment"]) == ("dev", "prod")
    for job, stack in (("deploy-dev", "dev"), ("deploy-prod", "prod")):
        [pulumi] = steps_using(jobs[job], "pulumi/actions")
        assert (pulumi["with"]["command"], pulumi["with"]["stack-name"], pulumi["with"]["policyPacks"]) == (
            "up", stack, "policy")
        assert "pull-requests" not in jobs[job]["permissions"]
    assert flow["concurrency"]["cancel-in-progress"] is False, "a deploy is never cut off halfway"


def test_a_scheduled_drift_check_previews_every_stack_expecting_no_changes() -> None:
    flow = workflow("drift.yml")
    assert "schedule" in flow["on"]
    job = flow["jobs"]["drift"]
    assert sorted(entry["stack"] for entry in job["strategy"]["matrix"]["include"]) == stack_names()
    [pulumi] = steps_using(job, "pulumi/actions")
    assert (pulumi["with"]["command"], pulumi["with"]["expect-no-changes"]) == ("preview", True)


def test_the_state_backend_is_chosen_by_a_repository_variable() -> None:
    for name in ("pull-request.yml", "deploy.yml", "drift.yml"):
        for job in workflow(name)["jobs"].values():
            for pulumi in steps_using(job, "pulumi/actions"):
                assert pulumi["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
