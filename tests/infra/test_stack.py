"""The deployed stack, built under Pulumi mocks for every committed Pulumi.<stack>.yaml."""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest

from infra.apis import REQUIRED_APIS
from infra.identities import PROJECT_LEVEL_ROLES, RUNTIME_PROJECT_ROLES
from infra.settings import SettingsError, parse_duration
from tasklane.core import environment as handler_env
from tests.infra.harness import (
    MOCK_ACCESS_TOKEN,
    PROJECT_NUMBER,
    Registration,
    StackSnapshot,
    build_stack,
    reveal,
    stack_config,
    stack_file_config,
    stack_names,
)

API = "gcp:projects/service:Service"
ACCOUNT = "gcp:serviceaccount/account:Account"
ACCOUNT_IAM = "gcp:serviceaccount/iAMMember:IAMMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
AGENT = "gcp:projects/serviceIdentity:ServiceIdentity"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
IMAGE = "docker-build:index:Image"
SERVICE = "gcp:cloudrunv2/service:Service"
SERVICE_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
QUEUE = "gcp:cloudtasks/queue:Queue"
QUEUE_IAM = "gcp:cloudtasks/queueIamMember:QueueIamMember"
DATABASE = "gcp:firestore/database:Database"
FIELD = "gcp:firestore/field:Field"
TOPIC = "gcp:pubsub/topic:Topic"
TOPIC_IAM = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
SINK = "gcp:logging/projectSink:ProjectSink"
COMPONENT = "tasklane:index:TaskPipeline"
PUBLIC = {"allUsers", "allAuthenticatedUsers"}


@functools.cache
def snapshot(stack: str) -> StackSnapshot:
    return build_stack(stack)


def setting(stack: str, key: str) -> Any:
    """A config value as the program sees it (stack file over Pulumi.yaml default), decoded."""
    import json

    raw = stack_config(stack)[f"tasklane:{key}"]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def account(snap: StackSnapshot, suffix: str) -> Registration:
    return next(a for a in snap.of_type(ACCOUNT) if a.inputs["accountId"].endswith(suffix))


def container(snap: StackSnapshot) -> dict[str, Any]:
    containers = snap.one(SERVICE).inputs["template"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(snap: StackSnapshot) -> dict[str, str]:
    return {env["name"]: env["value"] for env in container(snap)["envs"]}


def all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in all_strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in all_strings(item)]
    return []


stacks = pytest.mark.parametrize("stack", stack_names())


def test_both_environments_are_committed() -> None:
    assert {"dev", "prod"} <= set(stack_names())


# -- Structure -------------------------------------------------------------------------------------


@stacks
def test_every_resource_lives_inside_one_task_pipeline_component(stack: str) -> None:
    snap = snapshot(stack)
    component = snap.one(COMPONENT)
    for resource in snap.resources:
        if resource is not component:
            assert resource.parent == component.urn, f"{resource.name} is not a child of the TaskPipeline"


@stacks
def test_apis_are_enabled_and_never_disabled_on_destroy(stack: str) -> None:
    apis = snapshot(stack).of_type(API)
    assert sorted(api.inputs["service"] for api in apis) == sorted(REQUIRED_APIS)
    for api in apis:
        assert api.inputs["disableOnDestroy"] is False


@stacks
def test_every_other_resource_waits_for_api_enablement(stack: str) -> None:
    snap = snapshot(stack)
    api_urns = {api.urn for api in snap.of_type(API)}
    for resource in snap.resources:
        if resource.custom and resource.type != API:
            missing = api_urns - set(resource.dependencies)
            assert not missing, f"{resource.name} does not depend on {sorted(missing)}"


# -- Image -----------------------------------------------------------------------------------------


@stacks
def test_registry_keeps_the_newest_images_and_deletes_the_rest(stack: str) -> None:
    repository = snapshot(stack).one(REPOSITORY).inputs
    assert repository["format"] == "DOCKER"
    assert repository["cleanupPolicyDryRun"] is False
    policies = {policy["action"]: policy for policy in repository["cleanupPolicies"]}
    assert policies["KEEP"]["mostRecentVersions"]["keepCount"] == setting(stack, "imageKeepCount")
    assert policies["DELETE"]["condition"]["tagState"] == "ANY"


@stacks
def test_handler_image_is_built_from_the_repository_root_for_amd64_with_no_credentials_in_state(stack: str) -> None:
    snap = snapshot(stack)
    image = snap.one(IMAGE).inputs
    region = stack_file_config(stack)["gcp:region"]
    # Relative to infra/, where the Pulumi CLI runs the program (Pulumi.yaml `main`).
    assert image["context"]["location"] == ".."
    assert image["dockerfile"]["location"] == "../handler/Dockerfile"
    assert image["platforms"] == ["linux/amd64"]
    assert image["push"] is True
    assert image["tags"][0].startswith(f"{region}-docker.pkg.dev/{stack_file_config(stack)['gcp:project']}/")
    # Every input is kept in state, which the read-only previewer can decrypt: the push logs in through Docker's
    # credential helper instead, and no resource's inputs hold the deployer's access token.
    assert "registries" not in image
    for resource in snap.resources:
        assert MOCK_ACCESS_TOKEN not in all_strings(reveal(resource.inputs)), resource.name


@stacks
def test_service_runs_the_image_by_digest(stack: str) -> None:
    snap = snapshot(stack)
    image_ref = snap.one(IMAGE).outputs["ref"]
    assert re.fullmatch(r"[a-z0-9-]+-docker\.pkg\.dev/\S+@sha256:[0-9a-f]{64}", image_ref)
    assert container(snap)["image"] == image_ref
    assert snap.outputs["image_ref"] == image_ref


def test_a_handler_change_rolls_one_new_revision_and_no_change_rolls_none(tmp_path: Any) -> None:
    """The service's inputs differ only in the image digest when handler code changes, and not at all otherwise."""
    import shutil

    from infra.pipeline import TaskPipeline
    from infra.settings import load_settings
    from tests.infra.harness import REPO

    def main_with_root(build_root: Any) -> Any:
        return lambda: TaskPipeline("p", load_settings(), build_root=build_root)

    copy = tmp_path / "checkout"
    for folder in ("core", "framework", "handler", "tests"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
    shutil.copy(REPO / ".dockerignore", copy / ".dockerignore")
    first = build_stack("dev", main=main_with_root(copy)).one(SERVICE).inputs
    again = build_stack("dev", main=main_with_root(copy)).one(SERVICE).inputs
    assert again == first

    # What the image does not hold (tests, notes) never rolls a revision.
    (copy / "tests" / "conftest.py").write_text("# changed\n")
    (copy / "NOTES.md").write_text("notes\n")
    assert build_stack("dev", main=main_with_root(copy)).one(SERVICE).inputs == first

    for changed_file in (copy / "handler" / "order_actions.py", copy / "framework" / "src" / "tasklane" / "handler" /
                         "app.py"):
        changed_file.write_text(changed_file.read_text() + "\n# changed\n")
        changed = build_stack("dev", main=main_with_root(copy)).one(SERVICE).inputs
        first_image = first["template"]["containers"][0]["image"]
        changed_image = changed["template"]["containers"][0].pop("image")
        assert changed_image != first_image, changed_file
        assert changed == {**first, "template": {**first["template"], "containers": [
            {key: value for key, value in first["template"]["containers"][0].items() if key != "image"}]}}
        first = build_stack("dev", main=main_with_root(copy)).one(SERVICE).inputs


# -- Identities and access ---------------------------------------------------------------------------


@stacks
def test_service_runs_as_its_own_runtime_account_not_the_default_compute_account(stack: str) -> None:
    snap = snapshot(stack)
    runtime = account(snap, "-runtime")
    service_account = snap.one(SERVICE).inputs["template"]["serviceAccount"]
    assert service_account == runtime.outputs["email"]
    assert not service_account.endswith("-compute@developer.gserviceaccount.com")


@stacks
def test_runtime_account_can_only_write_logs_and_metrics_and_use_its_own_database(stack: str) -> None:
    snap = snapshot(stack)
    runtime_member = account(snap, "-runtime").outputs["member"]
    grants = [grant for grant in snap.resources if grant.type in (PROJECT_IAM, ACCOUNT_IAM, SERVICE_IAM, QUEUE_IAM)
              and grant.inputs["member"] == runtime_member]
    unconditioned = sorted(grant.inputs["role"] for grant in grants if "condition" not in grant.inputs)
    assert unconditioned == sorted(RUNTIME_PROJECT_ROLES) == ["roles/cloudtrace.agent", "roles/logging.logWriter",
                                                              "roles/monitoring.metricWriter"]
    [database_grant] = [grant for grant in grants if "condition" in grant.inputs]
    database = snap.one(DATABASE).inputs["name"]
    assert database_grant.inputs["role"] == "roles/datastore.user"
    assert database_grant.inputs["condition"]["expression"] == (
        f'resource.name == "projects/{stack_file_config(stack)["gcp:project"]}/databases/{database}"')


@stacks
def test_run_invoker_goes_to_the_invoker_and_push_accounts_on_this_service_only(stack: str) -> None:
    snap = snapshot(stack)
    bindings = snap.of_type(SERVICE_IAM)
    assert sorted(binding.inputs["member"] for binding in bindings) == sorted(
        account(snap, suffix).outputs["member"] for suffix in ("-invoker", "-push"))
    for binding in bindings:
        assert binding.inputs["role"] == "roles/run.invoker"
        assert binding.inputs["name"] == snap.one(SERVICE).outputs["name"]
    # No other grant names run.invoker, and neither account holds anything at project level.
    holders = [r for r in snap.resources if "roles/run.invoker" in all_strings(r.inputs)]
    assert sorted(r.urn for r in holders) == sorted(b.urn for b in bindings)
    for suffix in ("-invoker", "-push"):
        member = account(snap, suffix).outputs["member"]
        assert all(grant.inputs["member"] != member for grant in snap.of_type(PROJECT_IAM))


@stacks
def test_no_iam_member_anywhere_is_public(stack: str) -> None:
    snap = snapshot(stack)
    for resource in snap.resources:
        strings = set(all_strings(resource.inputs))
        assert not strings & PUBLIC, f"{resource.name} names a public principal"


@stacks
def test_cloud_tasks_agent_may_mint_tokens_as_the_invoker(stack: str) -> None:
    snap = snapshot(stack)
    agent = snap.one(AGENT)
    assert agent.inputs["service"] == "cloudtasks.googleapis.com"
    assert agent.outputs["email"] == f"service-{PROJECT_NUMBER}@gcp-sa-cloudtasks.iam.gserviceaccount.com"
    grants = [g for g in snap.of_type(ACCOUNT_IAM) if g.inputs["member"] == agent.outputs["member"]]
    assert [(g.inputs["role"], g.inputs["serviceAccountId"]) for g in grants] == [
        ("roles/iam.serviceAccountUser", account(snap, "-invoker").outputs["name"])]
    # An agent created on request holds no roles: the one carrying getOpenIdToken is granted explicitly,
    # on the project the agent's project, and the grant waits for the agent to exist.
    [project_grant] = [g for g in snap.of_type(PROJECT_IAM) if g.inputs["member"] == agent.outputs["member"]]
    assert project_grant.inputs["role"] == "roles/cloudtasks.serviceAgent"
    assert project_grant.inputs["project"] == stack_file_config(stack)["gcp:project"]
    assert agent.urn in project_grant.dependencies


@stacks
def test_the_program_grants_at_project_level_exactly_the_roles_the_deployer_may_grant(stack: str) -> None:
    """The deployer's projectIamAdmin is conditioned on bootstrap/grantable-roles.txt; a role missing there
    would fail the first deploy with PERMISSION_DENIED, one extra there would widen the deployer."""
    from tests.delivery.test_bootstrap import grantable_roles

    granted = {grant.inputs["role"] for grant in snapshot(stack).of_type(PROJECT_IAM)}
    assert granted == set(PROJECT_LEVEL_ROLES) == set(grantable_roles())


@stacks
def test_each_producer_may_enqueue_and_act_as_the_invoker_and_nothing_more(stack: str) -> None:
    snap = snapshot(stack)
    producers = setting(stack, "producerMembers") or [
        "serviceAccount:orders-api@example-project.iam.gserviceaccount.com", "group:producers@example.com"]
    snap = snapshot(stack) if setting(stack, "producerMembers") else build_stack(
        stack, overrides={"tasklane:producerMembers": producers})
    invoker_name = account(snap, "-invoker").outputs["name"]
    queue_name = snap.one(QUEUE).outputs["name"]
    for member in producers:
        grants = sorted((g.type, g.inputs["role"], g.inputs.get("name") or g.inputs.get("serviceAccountId"))
                        for g in snap.resources if g.inputs.get("member") == member)
        assert grants == sorted([
            (QUEUE_IAM, "roles/cloudtasks.enqueuer", queue_name),
            (ACCOUNT_IAM, "roles/iam.serviceAccountUser", invoker_name),
        ])


# -- Service -----------------------------------------------------------------------------------------


@stacks
def test_service_is_private_with_ingress_from_config(stack: str) -> None:
    service = snapshot(stack).one(SERVICE).inputs
    assert service["invokerIamDisabled"] is False
    assert not service.get("defaultUriDisabled"), "Cloud Tasks needs the run.app URL with internal ingress"
    expected = {"internal": "INGRESS_TRAFFIC_INTERNAL_ONLY", "all": "INGRESS_TRAFFIC_ALL",
                "internal-and-cloud-load-balancing": "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}
    assert service["ingress"] == expected[setting(stack, "ingress")]


@stacks
def test_request_timeout_is_at_least_the_task_dispatch_deadline(stack: str) -> None:
    snap = snapshot(stack)
    timeout = parse_duration(snap.one(SERVICE).inputs["template"]["timeout"])
    deadline = parse_duration(snap.outputs["task_dispatch_deadline"])
    assert timeout >= deadline
    assert timeout == parse_duration(setting(stack, "requestTimeout"))
    assert deadline == parse_duration(setting(stack, "taskDispatchDeadline"))


@stacks
def test_service_capacity_and_protection_come_from_config(stack: str) -> None:
    service = snapshot(stack).one(SERVICE).inputs
    template = service["template"]
    assert template["maxInstanceRequestConcurrency"] == setting(stack, "containerConcurrency")
    assert template["scaling"]["minInstanceCount"] == setting(stack, "minInstances")
    assert template["scaling"]["maxInstanceCount"] == setting(stack, "maxInstances")
    assert service["scaling"]["minInstanceCount"] == setting(stack, "minInstances")
    assert template["containers"][0]["resources"]["limits"] == {
        "cpu": str(setting(stack, "cpu")), "memory": setting(stack, "memory")}
    assert service["deletionProtection"] is setting(stack, "deletionProtection")


@stacks
def test_task_audience_is_explicit_and_accepted_by_the_service(stack: str) -> None:
    snap = snapshot(stack)
    audience = snap.outputs["task_audience"]
    region = stack_file_config(stack)["gcp:region"]
    assert audience == f"https://{setting(stack, 'name')}-{PROJECT_NUMBER}.{region}.run.app"
    assert snap.one(SERVICE).inputs["customAudiences"] == [audience]
    assert env_of(snap)[handler_env.TASK_AUDIENCE] == audience


def test_a_custom_audience_replaces_the_service_url() -> None:
    snap = build_stack("dev", overrides={"tasklane:customAudience": "https://tasks.example.com"})
    assert snap.outputs["task_audience"] == "https://tasks.example.com"
    assert snap.one(SERVICE).inputs["customAudiences"] == ["https://tasks.example.com"]
    assert env_of(snap)[handler_env.TASK_AUDIENCE] == "https://tasks.example.com"


@stacks
def test_handler_is_told_its_queue_invoker_audience_max_attempts_and_token_check(stack: str) -> None:
    snap = snapshot(stack)
    assert env_of(snap) == {
        handler_env.QUEUE_PATH: snap.outputs["queue_path"],
        handler_env.INVOKER_SERVICE_ACCOUNT: account(snap, "-invoker").outputs["email"],
        handler_env.TASK_AUDIENCE: snap.outputs["task_audience"],
        handler_env.MAX_ATTEMPTS: str(setting(stack, "maxAttempts")),
        handler_env.TASK_DISPATCH_DEADLINE: snap.outputs["task_dispatch_deadline"],
        handler_env.TOKEN_CHECK: setting(stack, "tokenCheck"),
        handler_env.FIRESTORE_DATABASE: snap.outputs["firestore_database"],
        handler_env.PUSH_SERVICE_ACCOUNT: account(snap, "-push").outputs["email"],
        handler_env.TRACE_EXPORTER: "cloud-trace",
    }


# -- Queue -------------------------------------------------------------------------------------------


@stacks
def test_queue_is_auto_named_with_rates_retries_and_logging_from_config(stack: str) -> None:
    queue = snapshot(stack).one(QUEUE)
    assert "name" not in queue.inputs, "a fixed queue name would be blocked for 7 days after a delete"
    assert queue.inputs["location"] == stack_file_config(stack)["gcp:region"]
    assert queue.inputs["rateLimits"] == {
        "maxDispatchesPerSecond": float(setting(stack, "maxDispatchesPerSecond")),
        "maxConcurrentDispatches": setting(stack, "maxConcurrentDispatches"),
    }
    retry = queue.inputs["retryConfig"]
    assert retry["maxAttempts"] == setting(stack, "maxAttempts")
    assert retry["maxDoublings"] == setting(stack, "maxDoublings")
    for key in ("minBackoff", "maxBackoff", "maxRetryDuration"):
        assert re.fullmatch(r"\d+(\.\d+)?s", retry[key]), retry[key]
        assert parse_duration(retry[key]) == parse_duration(setting(stack, key))
    assert queue.inputs["stackdriverLoggingConfig"]["samplingRatio"] == float(setting(stack, "loggingSamplingRatio"))


# -- Outputs -----------------------------------------------------------------------------------------


@stacks
def test_outputs_give_producers_what_they_need_in_the_right_form(stack: str) -> None:
    outputs = snapshot(stack).outputs
    project, region = stack_file_config(stack)["gcp:project"], stack_file_config(stack)["gcp:region"]
    assert re.fullmatch(r"https://[a-z0-9-]+\.a\.run\.app", outputs["service_url"])
    assert re.fullmatch(rf"projects/{project}/locations/{region}/queues/[A-Za-z0-9-]{{1,100}}", outputs["queue_path"])
    assert re.fullmatch(rf"[a-z0-9-]{{6,30}}@{project}\.iam\.gserviceaccount\.com", outputs["invoker_service_account"])
    assert outputs["task_audience"].startswith("https://")
    assert "@sha256:" in outputs["image_ref"]


@stacks
def test_environments_differ_where_they_really_differ(stack: str) -> None:
    dev, prod = stack_file_config("dev"), stack_file_config("prod")
    for key in ("deletionProtection", "minInstances", "maxDispatchesPerSecond", "maxAttempts",
                "firestoreDeleteProtection"):
        assert dev[f"tasklane:{key}"] != prod[f"tasklane:{key}"], key
    assert prod["tasklane:deletionProtection"] is True and dev["tasklane:deletionProtection"] is False


def test_a_second_pipeline_is_a_few_lines_and_does_not_collide() -> None:
    import dataclasses

    from infra.pipeline import TaskPipeline
    from infra.settings import load_settings

    def two_pipelines() -> None:
        settings = load_settings()
        TaskPipeline(settings.name, settings)
        TaskPipeline("reports", dataclasses.replace(settings, name="tasklane-reports", max_dispatches_per_second=5))

    snap = build_stack("dev", main=two_pipelines)
    assert len(snap.of_type(COMPONENT)) == 2
    assert len(snap.of_type(QUEUE)) == 2 and len(snap.of_type(SERVICE)) == 2
    assert len({r.urn for r in snap.resources}) == len(snap.resources)
    account_ids = [a.inputs["accountId"] for a in snap.of_type(ACCOUNT)]
    assert len(set(account_ids)) == len(account_ids) == 6
    databases = [d.inputs["name"] for d in snap.of_type(DATABASE)]
    assert sorted(databases) == ["tasklane-dev-db", "tasklane-reports-db"]
    rates = sorted(q.inputs["rateLimits"]["maxDispatchesPerSecond"] for q in snap.of_type(QUEUE))
    assert rates == [5.0, 20.0]


# -- Firestore ---------------------------------------------------------------------------------------


@stacks
def test_the_pipeline_has_its_own_native_firestore_database_from_config(stack: str) -> None:
    snap = snapshot(stack)
    database = snap.one(DATABASE).inputs
    assert database["type"] == "FIRESTORE_NATIVE"
    assert database["name"] == snap.outputs["firestore_database"] == f"{setting(stack, 'name')}-db"
    assert database["locationId"] == stack_file_config(stack)["gcp:region"]
    protected = setting(stack, "firestoreDeleteProtection")
    assert database["deleteProtectionState"] == ("DELETE_PROTECTION_ENABLED" if protected
                                                 else "DELETE_PROTECTION_DISABLED")
    pitr = setting(stack, "firestorePointInTimeRecovery")
    assert database["pointInTimeRecoveryEnablement"] == ("POINT_IN_TIME_RECOVERY_ENABLED" if pitr
                                                         else "POINT_IN_TIME_RECOVERY_DISABLED")


def test_prod_keeps_its_database_and_its_history_dev_can_be_deleted() -> None:
    assert snapshot("prod").one(DATABASE).inputs["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert snapshot("prod").one(DATABASE).inputs["pointInTimeRecoveryEnablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    assert snapshot("dev").one(DATABASE).inputs["deleteProtectionState"] == "DELETE_PROTECTION_DISABLED"


@stacks
def test_finished_idempotency_keys_expire_through_a_ttl_policy(stack: str) -> None:
    from tasklane.core import firestore_names

    snap = snapshot(stack)
    [field] = snap.of_type(FIELD)
    assert (field.inputs["collection"], field.inputs["field"]) == (firestore_names.IDEMPOTENCY_COLLECTION,
                                                                   firestore_names.EXPIRY_FIELD)
    assert field.inputs["database"] == snap.one(DATABASE).outputs["name"]
    assert field.inputs["ttlConfig"] == {}
    assert snap.one(DATABASE).urn in field.dependencies


def test_database_settings_are_validated() -> None:
    with pytest.raises(SettingsError, match="tasklane:firestoreDatabase = 'Bad_Name'"):
        build_stack("dev", overrides={"tasklane:firestoreDatabase": "Bad_Name"})
    with pytest.raises(SettingsError, match="tasklane:firestoreLocation = 'the moon'.*multi-region"):
        build_stack("dev", overrides={"tasklane:firestoreLocation": "the moon"})
    snap = build_stack("dev", overrides={"tasklane:firestoreDatabase": "orders-state",
                                         "tasklane:firestoreLocation": "nam5"})
    assert (snap.one(DATABASE).inputs["name"], snap.one(DATABASE).inputs["locationId"]) == ("orders-state", "nam5")


# -- Tasks given up unseen ---------------------------------------------------------------------------


@stacks
def test_every_task_operation_is_logged_so_no_give_up_goes_unrecorded(stack: str) -> None:
    queue = snapshot(stack).one(QUEUE).inputs
    assert queue["stackdriverLoggingConfig"]["samplingRatio"] == 1.0


@stacks
def test_final_failed_attempts_are_routed_through_pub_sub_to_the_handler(stack: str) -> None:
    snap = snapshot(stack)
    project = stack_file_config(stack)["gcp:project"]
    queue_name = snap.one(QUEUE).outputs["name"]
    topic = snap.one(TOPIC)
    sink = snap.one(SINK).inputs
    assert sink["destination"] == f"pubsub.googleapis.com/projects/{project}/topics/{topic.outputs['name']}"
    assert sink["uniqueWriterIdentity"] is True
    assert sink["filter"] == (
        f'logName="projects/{project}/logs/cloudtasks.googleapis.com%2Ftask_operations_log" '
        f'AND resource.type="cloud_tasks_queue" AND resource.labels.queue_id="{queue_name}" '
        'AND jsonPayload.attemptResponseLog:* AND jsonPayload.attemptResponseLog.status!="OK" '
        "AND NOT jsonPayload.attemptResponseLog.retryTime:*")
    [publisher] = snap.of_type(TOPIC_IAM)
    assert (publisher.inputs["role"], publisher.inputs["member"], publisher.inputs["topic"]) == (
        "roles/pubsub.publisher", snap.one(SINK).outputs["writerIdentity"], topic.outputs["name"])
    subscription = snap.one(SUBSCRIPTION).inputs
    push = subscription["pushConfig"]
    assert push["pushEndpoint"] == snap.one(SERVICE).outputs["uri"] + "/task-operations"
    assert push["oidcToken"] == {"serviceAccountEmail": account(snap, "-push").outputs["email"],
                                 "audience": snap.outputs["task_audience"]}
    assert subscription["expirationPolicy"] == {"ttl": ""}, "an idle subscription must not expire"
