"""Bootstrapping an environment: the script passes shellcheck, gives each identity exactly its roles, trusts
only reviewed code on main with the deployer, and can be rerun.

Two ways of running it: the dry run (`BOOTSTRAP_DRY_RUN=1`, the commands a fresh project gets), and a
recording `gcloud` on PATH that answers `describe` for what already exists, as a second run meets it.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bootstrap" / "bootstrap.sh"
BIN = Path(sys.executable).parent
REPOSITORY = "my-org/tasklane"


def _roles(name: str) -> list[str]:
    lines = (REPO / "bootstrap" / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def roles_file() -> list[str]:
    return _roles("deployer-roles.txt")


def previewer_roles() -> list[str]:
    return _roles("previewer-roles.txt")


def grantable_roles() -> list[str]:
    return _roles("grantable-roles.txt")


def dry_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "BOOTSTRAP_DRY_RUN": "1", **env})


def flag(commands: str, name: str) -> str:
    """The value of `--name` in the one printed command that has it, unquoted as the shell would."""
    [line] = [line for line in commands.splitlines() if f"--{name} " in line]
    words = shlex.split(line)
    return words[words.index(f"--{name}") + 1]


def granted(commands: str, account: str) -> list[tuple[str, str]]:
    """(role, condition) of each project-level grant to `account`."""
    pattern = (rf"add-iam-policy-binding my-tasklane-prod --member serviceAccount:{account}@\S+ "
               r"--role (roles/[\w.]+) (--condition None|--condition-from-file \S+)")
    return re.findall(pattern, commands)


def test_the_script_passes_shellcheck() -> None:
    result = subprocess.run([str(BIN / "shellcheck"), str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_the_readme_lists_exactly_the_roles_the_script_grants() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### The deployer's roles"):readme.index("### The previewer's roles")]
    assert sorted(re.findall(r"^\| `(roles/[\w.]+)` \|", section, re.M)) == sorted(roles_file())
    section = readme[readme.index("### The previewer's roles"):readme.index("## What producers get and need")]
    assert sorted(re.findall(r"^\| `(roles/[\w.]+)` \|", section, re.M)) == sorted(previewer_roles())


def test_the_deployer_gets_its_roles_with_iam_admin_limited_to_what_the_program_grants() -> None:
    result = dry_run("my-tasklane-prod", "prod", REPOSITORY)
    assert result.returncode == 0, result.stderr
    grants = dict(granted(result.stdout, "tasklane-deployer"))
    assert sorted(grants) == sorted(roles_file())
    unconditioned = [role for role, condition in grants.items() if condition == "--condition None"]
    assert sorted(unconditioned) == sorted(set(roles_file()) - {"roles/resourcemanager.projectIamAdmin"})
    assert grants["roles/resourcemanager.projectIamAdmin"].startswith("--condition-from-file")
    [expression] = re.findall(r"# grantable.yaml: expression: (.*)", result.stdout)
    listed = re.fullmatch(r"api\.getAttribute\('iam\.googleapis\.com/modifiedGrantsByRole', \[\]\)"
                          r"\.hasOnly\(\[(.*)\]\)", expression)
    assert listed, expression
    assert sorted(re.findall(r"'(roles/[\w.]+)'", listed.group(1))) == sorted(grantable_roles())
    assert "roles/owner" not in grantable_roles() and "roles/resourcemanager.projectIamAdmin" not in grantable_roles()


def test_the_previewer_is_read_only() -> None:
    commands = dry_run("my-tasklane-prod", "prod", REPOSITORY).stdout
    grants = granted(commands, "tasklane-previewer")
    assert sorted(role for role, _ in grants) == sorted(previewer_roles())
    for role in previewer_roles():
        assert re.search(r"viewer|reader|Reviewer|browser", role, re.I), f"{role} is not a read-only role"
    # State: read only (a preview takes no lock and writes nothing).
    bucket_grants = re.findall(r"buckets add-iam-policy-binding gs://my-tasklane-prod-pulumi-state --member "
                               r"serviceAccount:tasklane-previewer@\S+ --role (\S+)", commands)
    assert bucket_grants == ["roles/storage.objectViewer"]


def test_only_this_repository_is_trusted_and_the_deployer_only_from_main_in_its_environment() -> None:
    commands = dry_run("my-tasklane-prod", "prod", REPOSITORY).stdout
    condition = flag(commands, "attribute-condition")
    assert condition == (
        "assertion.repository == 'my-org/tasklane' && "
        "(!assertion.sub.endsWith(':environment:prod') || assertion.ref == 'refs/heads/main')")
    mapped = dict(item.split("=", 1) for item in flag(commands, "attribute-mapping").split(","))
    assert mapped["google.subject"] == "assertion.sub"
    assert mapped["attribute.stage"] == (
        "assertion.sub.endsWith(':environment:prod') ? 'deploy' : "
        "(assertion.sub.endsWith(':environment:prod-preview') ? 'preview' : 'none')")
    pool = "principalSet://iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/github"
    impersonation = re.findall(r"service-accounts add-iam-policy-binding (\S+) .*--role roles/iam.workloadIdentityUser "
                               r"--member (\S+)", commands)
    assert sorted(impersonation) == sorted([
        ("tasklane-deployer@my-tasklane-prod.iam.gserviceaccount.com", f"{pool}/attribute.stage/deploy"),
        ("tasklane-previewer@my-tasklane-prod.iam.gserviceaccount.com", f"{pool}/attribute.stage/preview"),
    ]), "nothing trusts the whole repository: a branch or pull request must not reach the deployer"
    assert "attribute.repository/" not in commands
    assert "keys create" not in commands, "no service-account keys"


def test_each_environment_has_its_own_state_bucket_in_its_own_project() -> None:
    for project, stack in (("my-tasklane-dev", "dev"), ("my-tasklane-prod", "prod")):
        commands = dry_run(project, stack, REPOSITORY).stdout
        bucket = f"gs://{project}-pulumi-state"
        assert f"buckets create {bucket} --project {project} " in commands
        assert "--public-access-prevention" in commands and f"buckets update {bucket} --versioning" in commands
        assert f"gh variable set PULUMI_BACKEND_URL --env \"$env\" --body {bucket}" in commands
        assert f"for env in {stack} {stack}-preview" in commands
        assert f"gh variable set GCP_SERVICE_ACCOUNT --env {stack} --body tasklane-deployer@{project}" in commands
    assert "reviewers[][type]=User" in dry_run("my-tasklane-prod", "prod", REPOSITORY).stdout
    assert "reviewers" not in dry_run("my-tasklane-dev", "dev", REPOSITORY).stdout
    custom = dry_run("my-tasklane-dev", "dev", REPOSITORY, "team-state-dev").stdout
    assert "buckets create gs://team-state-dev --project my-tasklane-dev" in custom


def test_bad_arguments_are_refused_with_a_reason() -> None:
    assert dry_run("My Project", "dev", REPOSITORY).stderr.strip() == \
        "bootstrap: 'My Project' is not a Google Cloud project ID"
    assert "is not a GitHub repository" in dry_run("my-tasklane-dev", "dev", "not-a-repo").stderr
    assert "is not a Cloud Storage bucket name" in dry_run("my-tasklane-dev", "dev", REPOSITORY, "Bad_Bucket!").stderr
    assert dry_run("only-one").returncode == 2


def test_the_project_is_created_and_billed_only_when_a_billing_account_is_given() -> None:
    without = dry_run("my-tasklane-dev", "dev", REPOSITORY).stdout
    assert "projects create" not in without
    created = dry_run("my-tasklane-dev", "dev", REPOSITORY, BILLING_ACCOUNT="0X0X0X-0X0X0X-0X0X0X").stdout
    assert "gcloud projects create my-tasklane-dev" in created
    assert "gcloud billing projects link my-tasklane-dev --billing-account 0X0X0X-0X0X0X-0X0X0X" in created


# -- Rerunning: a recording gcloud that knows what exists -------------------------------------------------

RECORDING_GCLOUD = r"""#!/usr/bin/env bash
# Records every call; `describe` succeeds for what is listed in $STATE/exists (one line a resource) and,
# for a service account created by this run, only after $STATE/visible_after failed looks.
echo "$*" >> "$STATE/calls"
case "$*" in
  *" describe "*|*"describe "*)
    key=$(printf '%s\n' "$@" | grep -v -- '^--' | sed -n '3,4p' | tr '\n' ' ')
    for word in "$@"; do
      if grep -qxF -- "$word" "$STATE/exists" 2>/dev/null; then
        if [[ $* == "projects describe"*"--format"* ]]; then echo 123456789012; fi
        exit 0
      fi
    done
    if [[ $1 == iam && $2 == service-accounts ]] && grep -q "service-accounts create ${4%%@*} " "$STATE/calls"; then
      looks=$(sed -n "/service-accounts create ${4%%@*} /,\$p" "$STATE/calls" | grep -c "service-accounts describe $4")
      (( looks > $(cat "$STATE/visible_after") )) && exit 0
    fi
    [[ $* == "projects describe"*"--format"* ]] && { echo 123456789012; exit 0; }
    echo "ERROR: (gcloud) NOT_FOUND: $key" >&2; exit 1 ;;
esac
exit 0
"""


def run_with_recording_gcloud(tmp_path: Path, exists: list[str], visible_after: int = 0,
                              ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(RECORDING_GCLOUD)
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "exists").write_text("\n".join(exists) + "\n")
    (tmp_path / "visible_after").write_text(str(visible_after))
    (tmp_path / "calls").write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(tmp_path), "BOOTSTRAP_DRY_RUN": "0"}
    result = subprocess.run(["bash", str(SCRIPT), "my-tasklane-prod", "prod", REPOSITORY], capture_output=True,
                            text=True, timeout=120, env=env)
    return result, (tmp_path / "calls").read_text().splitlines()


def test_a_first_run_waits_for_new_accounts_to_be_visible_before_binding_roles(tmp_path: Path) -> None:
    result, calls = run_with_recording_gcloud(tmp_path, exists=[], visible_after=2)
    assert result.returncode == 0, result.stderr
    created = next(i for i, call in enumerate(calls)
                   if call.startswith("iam service-accounts create tasklane-deployer"))
    first_binding = next(i for i, call in enumerate(calls)
                         if "add-iam-policy-binding" in call and "tasklane-deployer@" in call)
    looks = [i for i, call in enumerate(calls)
             if call.startswith("iam service-accounts describe tasklane-deployer@") and i > created]
    assert len(looks) == 3 and looks[-1] < first_binding, calls
    assert any(call.startswith("iam workload-identity-pools providers create-oidc") for call in calls)


def test_a_second_run_keeps_what_exists_and_creates_nothing_twice(tmp_path: Path) -> None:
    existing = ["my-tasklane-prod", "gs://my-tasklane-prod-pulumi-state", "github",
                "tasklane-deployer@my-tasklane-prod.iam.gserviceaccount.com",
                "tasklane-previewer@my-tasklane-prod.iam.gserviceaccount.com"]
    result, calls = run_with_recording_gcloud(tmp_path, exists=existing)
    assert result.returncode == 0, result.stderr
    assert not [call for call in calls if re.search(r"\bcreate\b", call) and "create-oidc" not in call], calls
    assert not any("create-oidc" in call for call in calls)
    assert any(call.startswith("iam workload-identity-pools providers update-oidc github") for call in calls), \
        "the provider's trust is brought in step with the script"
    # Bindings are set again (add-iam-policy-binding is idempotent), so a role added to a roles file lands.
    assert sum("add-iam-policy-binding my-tasklane-prod" in call for call in calls) == \
        len(roles_file()) + len(previewer_roles())
    assert "GCP_SERVICE_ACCOUNT --env prod --body tasklane-deployer@my-tasklane-prod" in result.stdout
    assert "workloadIdentityPools/github" in result.stdout and "projects/123456789012/" in result.stdout


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dry_runs_of_both_environments_succeed(stack: str) -> None:
    assert dry_run(f"my-tasklane-{stack}", stack, REPOSITORY).returncode == 0


# -- Who may impersonate whom: the provider's CEL, evaluated on the claims GitHub would send ----------------

def _token(sub_scope: str, ref: str, repository: str = REPOSITORY, immutable: bool = False) -> dict[str, str]:
    owner, name = repository.split("/")
    prefix = f"repo:{owner}@1342004/{name}@260064828" if immutable else f"repo:{repository}"
    return {"sub": f"{prefix}:{sub_scope}", "ref": ref, "repository": repository}


# (what ran, its token's claims, who it may impersonate: "deploy", "preview" or None)
TOKENS = [
    ("deploy job on a push to main", _token("environment:prod", "refs/heads/main"), "deploy"),
    ("deploy job, repository created after July 2026", _token("environment:prod", "refs/heads/main", immutable=True),
     "deploy"),
    ("a branch's workflow asking for the prod environment", _token("environment:prod", "refs/heads/feature"), None),
    ("a pull request asking for the prod environment", _token("environment:prod", "refs/pull/7/merge"), None),
    ("a pull request's preview", _token("environment:prod-preview", "refs/pull/7/merge"), "preview"),
    ("the scheduled drift check", _token("environment:prod-preview", "refs/heads/main"), "preview"),
    ("a pull request without an environment", _token("pull_request", "refs/pull/7/merge"), None),
    ("a push to main without an environment", _token("ref:refs/heads/main", "refs/heads/main"), None),
    ("dev's deploy environment", _token("environment:dev", "refs/heads/main"), None),
    ("an environment named like prod", _token("environment:preprod", "refs/heads/main"), None),
    ("another repository's deploy job", _token("environment:prod", "refs/heads/main", "evil/tasklane"), None),
]


@pytest.mark.parametrize("claims, allowed", [(claims, allowed) for _, claims, allowed in TOKENS],
                         ids=[what for what, _, _ in TOKENS])
def test_only_main_in_the_environment_reaches_the_deployer_and_only_preview_jobs_the_previewer(
        claims: dict[str, str], allowed: str | None) -> None:
    import celpy

    commands = dry_run("my-tasklane-prod", "prod", REPOSITORY).stdout
    condition = flag(commands, "attribute-condition")
    stage = dict(item.split("=", 1) for item in flag(commands, "attribute-mapping").split(","))["attribute.stage"]
    impersonable = {re.search(r"attribute\.stage/(\w+)", member).group(1)  # type: ignore[union-attr]
                    for member in re.findall(r"--role roles/iam.workloadIdentityUser --member (\S+)", commands)}

    environment = celpy.Environment()
    activation = {"assertion": celpy.json_to_cel(claims)}

    def evaluate(expression: str) -> object:
        return environment.program(environment.compile(expression)).evaluate(activation)

    accepted = bool(evaluate(condition))
    reached = str(evaluate(stage)) if accepted else None
    assert (reached if reached in impersonable else None) == allowed
