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


def auth_of(job: dict[str, Any]) -> dict[str, Any]:
    [auth] = steps_using(job, "google-github-actions/auth")
    return dict(auth["with"])


def test_pull_requests_run_the_tests_then_preview_every_stack_as_its_read_only_previewer() -> None:
    flow = workflow("pull-request.yml")
    assert set(flow["on"]) == {"pull_request"}
    jobs = flow["jobs"]
    assert "make test" in [step.get("run") for step in jobs["test"]["steps"]]
    preview = jobs["preview"]
    assert preview["needs"] == "test"
    assert sorted(preview["strategy"]["matrix"]["stack"]) == stack_names()
    # The previewer identity is bound to the <stack>-preview environment (bootstrap.sh); the deployer's
    # environment is never named by a pull request.
    assert preview["environment"] == "${{ matrix.stack }}-preview"
    assert auth_of(preview)["service_account"] == "${{ vars.GCP_SERVICE_ACCOUNT }}"
    [pulumi] = steps_using(preview, "pulumi/actions")
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["refresh"] is True
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["comment-on-pr"] is True
    assert "upsert" not in pulumi["with"], "the read-only previewer cannot create stacks"
    assert preview["permissions"]["pull-requests"] == "write", "to comment the preview"


def test_forks_get_no_preview_but_a_notice_and_their_tests_still_run() -> None:
    jobs = workflow("pull-request.yml")["jobs"]
    same_repository = "github.event.pull_request.head.repo.full_name == github.repository"
    assert jobs["preview"]["if"] == same_repository
    assert "if" not in jobs["test"]
    notice = jobs["fork-notice"]
    assert notice["if"] == same_repository.replace("==", "!=")
    assert "::notice" in notice["steps"][0]["run"]
    assert "id-token" not in notice["permissions"]


def test_main_deploys_and_verifies_dev_then_prod_each_in_its_environment() -> None:
    flow = workflow("deploy.yml")
    assert flow["on"]["push"]["branches"] == ["main"]
    jobs = flow["jobs"]
    assert {name: job.get("needs") for name, job in jobs.items()} == {
        "test": None, "deploy-dev": "test", "deploy-prod": "deploy-dev"}
    for stack in ("dev", "prod"):
        deploy = jobs[f"deploy-{stack}"]
        assert deploy["environment"] == stack, "the deployer is only had in its environment"
        [pulumi] = steps_using(deploy, "pulumi/actions")
        assert (pulumi["with"]["command"], pulumi["with"]["stack-name"], pulumi["with"]["policyPacks"]) == (
            "up", stack, "policy")
        assert pulumi["with"]["upsert"] is True, "the first run creates the stack on a fresh backend"
        runs = [step.get("run") for step in deploy["steps"]]
        # The smoke task runs in the same job, after this run's `up`: a job of its own could verify a newer run's.
        assert runs.index(f"make verify STACK={stack}") > deploy["steps"].index(pulumi)
        assert any(run and run.startswith("gcloud auth configure-docker") and f"Pulumi.{stack}.yaml" in run
                   for run in runs), "Docker logs in to the registry with the helper, not a token kept in state"
        assert "pull-requests" not in deploy["permissions"]
        assert auth_of(deploy)["service_account"] == "${{ vars.GCP_SERVICE_ACCOUNT }}"
        # At most one `up` per stack, never cancelled halfway.
        assert deploy["concurrency"] == {"group": f"pulumi-up-{stack}", "cancel-in-progress": False}


def test_a_scheduled_drift_check_refreshes_every_stack_as_the_previewer_expecting_no_changes() -> None:
    flow = workflow("drift.yml")
    assert "schedule" in flow["on"]
    job = flow["jobs"]["drift"]
    assert sorted(job["strategy"]["matrix"]["stack"]) == stack_names()
    assert job["environment"] == "${{ matrix.stack }}-preview"
    [pulumi] = steps_using(job, "pulumi/actions")
    assert (pulumi["with"]["command"], pulumi["with"]["expect-no-changes"], pulumi["with"]["refresh"]) == (
        "preview", True, True)


def test_the_state_backend_and_identities_come_from_each_environment() -> None:
    for name in ("pull-request.yml", "deploy.yml", "drift.yml"):
        for job in workflow(name)["jobs"].values():
            for pulumi in steps_using(job, "pulumi/actions"):
                assert pulumi["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
                assert "environment" in job, "environment variables reach only jobs that name the environment"
            if steps_using(job, "google-github-actions/auth"):
                assert auth_of(job) == {"workload_identity_provider": "${{ vars.GCP_WIF_PROVIDER }}",
                                        "service_account": "${{ vars.GCP_SERVICE_ACCOUNT }}"}
    text = "".join(path.read_text() for path in WORKFLOWS.glob("*.yml"))
    assert "PULUMI_ACCESS_TOKEN" not in text and "_DEV" not in text and "_PROD" not in text
