"""Bootstrapping an environment: the script passes shellcheck, grants exactly the README's deployer roles,
and trusts only the repository through Workload Identity Federation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bootstrap" / "bootstrap.sh"
BIN = Path(sys.executable).parent


def roles_file() -> list[str]:
    lines = (REPO / "bootstrap" / "deployer-roles.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dry_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "BOOTSTRAP_DRY_RUN": "1", **env})


def test_the_script_passes_shellcheck() -> None:
    result = subprocess.run([str(BIN / "shellcheck"), str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_the_readme_lists_exactly_the_roles_the_script_grants() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### The deployer's roles"):readme.index("## What producers get and need")]
    assert sorted(re.findall(r"^\| `(roles/[\w.]+)` \|", section, re.M)) == sorted(roles_file())


def test_the_deployer_gets_those_roles_and_only_this_repository_may_impersonate_it() -> None:
    result = dry_run("my-tasklane-prod", "prod", "my-org/tasklane", "my-state")
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    granted = re.findall(r"add-iam-policy-binding my-tasklane-prod .*--role (roles/[\w.]+)", commands)
    assert sorted(granted) == sorted(roles_file())
    assert "assertion.repository\\ ==\\ \\'my-org/tasklane\\'" in commands
    assert ("--role roles/iam.workloadIdentityUser --member principalSet://iam.googleapis.com/projects/"
            "PROJECT_NUMBER/locations/global/workloadIdentityPools/github/attribute.repository/my-org/tasklane"
            in commands)
    assert "keys create" not in commands, "no service-account keys"
    assert "--public-access-prevention" in commands and "--versioning" in commands
    assert "GCP_WIF_PROVIDER_PROD=" in commands and "GCP_DEPLOYER_SA_PROD=" in commands
    assert "with required reviewers" in commands


def test_bad_arguments_are_refused_with_a_reason() -> None:
    assert dry_run("My Project", "dev", "my-org/tasklane").stderr.strip() == \
        "bootstrap: 'My Project' is not a Google Cloud project ID"
    assert "is not a GitHub repository" in dry_run("my-tasklane-dev", "dev", "not-a-repo").stderr
    assert dry_run("only-one").returncode == 2


def test_the_project_is_created_and_billed_only_when_a_billing_account_is_given() -> None:
    without = dry_run("my-tasklane-dev", "dev", "my-org/tasklane").stdout
    assert "projects create" not in without
    created = dry_run("my-tasklane-dev", "dev", "my-org/tasklane", BILLING_ACCOUNT="0X0X0X-0X0X0X-0X0X0X").stdout
    assert "gcloud projects create my-tasklane-dev" in created
    assert "gcloud billing projects link my-tasklane-dev --billing-account 0X0X0X-0X0X0X-0X0X0X" in created
