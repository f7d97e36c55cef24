"""The guardrails pass every committed stack and catch each unsafe variant with a message."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import pytest

from policy.rules import QUEUE, SERVICE, STACK_RULES, stack_of, violations
from tests.infra.harness import Registration, StackSnapshot, build_stack, stack_names

SERVICE_IAM = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"


@functools.cache
def snapshot(stack: str, overrides: tuple[tuple[str, Any], ...] = ()) -> StackSnapshot:
    return build_stack(stack, overrides=dict(overrides))


def stack_violations(snap: StackSnapshot, stack: str) -> list[tuple[str, str, str]]:
    found = [(resource.name, rule, message) for resource in snap.resources
             for rule, message in violations(resource.type, resource.inputs, stack)]
    resources = [(resource.type, resource.inputs) for resource in snap.resources]
    return found + [("(stack)", rule.name, message) for rule in STACK_RULES for message in rule.check(resources, stack)]


@pytest.mark.parametrize("stack", stack_names())
def test_every_committed_stack_passes_every_rule(stack: str) -> None:
    assert stack_violations(snapshot(stack), stack) == []


def one(snap: StackSnapshot, kind: str) -> Registration:
    [found] = [resource for resource in snap.resources if resource.type == kind]
    return found


def altered(kind: str, change: Callable[[dict[str, Any]], None], stack: str = "dev") -> list[tuple[str, str]]:
    # The first of its kind (the service has two invoker bindings: the invoker and the push account).
    props = copy.deepcopy(next(r for r in snapshot(stack).resources if r.type == kind).inputs)
    change(props)
    return violations(kind, props, stack)


def set_path(*path: Any) -> Callable[[dict[str, Any]], None]:
    *parents, leaf, value = path

    def change(props: dict[str, Any]) -> None:
        target: Any = props
        for key in parents:
            target = target[key]
        if value is DELETE:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return change


DELETE = object()
UNSAFE: dict[str, tuple[str, Callable[[dict[str, Any]], None], str, str]] = {
    "invoker check disabled": (SERVICE, set_path("invokerIamDisabled", True), "no-public-invoker",
                               "invoker IAM check disabled"),
    "allUsers invoker": (SERVICE_IAM, set_path("member", "allUsers"), "no-public-invoker", "allUsers may invoke"),
    "allAuthenticatedUsers invoker": (SERVICE_IAM, set_path("member", "allAuthenticatedUsers"), "no-public-invoker",
                                      "allAuthenticatedUsers may invoke"),
    "App Engine default account": (SERVICE, set_path("template", "serviceAccount",
                                                     "my-project@appspot.gserviceaccount.com"),
                                   "no-default-compute-account", "runs as the default compute account"),
    "no service account": (SERVICE, set_path("template", "serviceAccount", DELETE), "no-default-compute-account",
                           "runs as the default compute account (which holds Editor)"),
    "default compute account": (SERVICE, set_path("template", "serviceAccount",
                                                  "123456789012-compute@developer.gserviceaccount.com"),
                                "no-default-compute-account", "runs as the default compute account"),
    "image by tag": (SERVICE, lambda p: p["template"]["containers"][0].update(
        image="us-central1-docker.pkg.dev/p/r/handler:latest"), "image-pinned-by-digest", "is not pinned by digest"),
    "queue without rate limit": (QUEUE, set_path("rateLimits", DELETE), "queue-bounded-and-rate-limited",
                                 "sets no rateLimits.maxDispatchesPerSecond"),
    "timeout below deadline": (SERVICE, set_path("template", "timeout", "60s"), "timeout-covers-deadline",
                               "request timeout (60s) is shorter than the task dispatch deadline (600s)"),
    "default timeout below deadline": (SERVICE, set_path("template", "timeout", DELETE), "timeout-covers-deadline",
                                       "request timeout (300s) is shorter"),
}


@pytest.mark.parametrize("kind, change, rule, message", UNSAFE.values(), ids=UNSAFE.keys())
def test_each_unsafe_resource_is_caught_with_a_message(kind: str, change: Callable[[dict[str, Any]], None],
                                                       rule: str, message: str) -> None:
    found = altered(kind, change)
    assert [name for name, _ in found] == [rule]
    assert message in found[0][1]


@pytest.mark.parametrize(("kind", "props"), [
    ("gcp:cloudrun/iamMember:IamMember", {"role": "roles/run.invoker", "member": "allUsers"}),
    ("gcp:cloudrun/iamBinding:IamBinding", {"role": "roles/run.invoker", "members": ["allUsers"]}),
    ("gcp:cloudrun/iamPolicy:IamPolicy", {"policyData": '{"bindings": [{"members": ["allUsers"]}]}'}),
])
def test_a_public_invoker_through_the_v1_resources_is_caught(kind: str, props: dict[str, Any]) -> None:
    assert [name for name, _ in violations(kind, props, "dev")] == ["no-public-invoker"]


@pytest.mark.parametrize(("kind", "props"), [
    ("gcp:cloudtasks/queueIamMember:QueueIamMember", {"role": "roles/cloudtasks.enqueuer",
                                                      "member": "allAuthenticatedUsers"}),
    ("gcp:serviceaccount/iAMMember:IAMMember", {"role": "roles/iam.serviceAccountUser",
                                                "member": "allAuthenticatedUsers"}),
    ("gcp:projects/iAMBinding:IAMBinding", {"role": "roles/viewer", "members": ["user:a@example.com", "allUsers"]}),
    ("gcp:storage/bucketIAMPolicy:BucketIAMPolicy", {"policyData": '{"bindings": [{"members": ["allUsers"]}]}'}),
])
def test_a_public_grant_on_anything_else_is_caught(kind: str, props: dict[str, Any]) -> None:
    [(name, message)] = violations(kind, props, "dev")
    assert name == "no-public-grant" and "nothing in the pipeline is public" in message


def test_grants_to_named_identities_pass() -> None:
    assert violations("gcp:cloudtasks/queueIamMember:QueueIamMember", {
        "role": "roles/cloudtasks.enqueuer", "member": "serviceAccount:api@p.iam.gserviceaccount.com"}, "dev") == []


def test_a_queue_with_unbounded_attempts_is_caught() -> None:
    """maxAttempts -1 is a valid setting, so the stack builds; the guardrail stops it."""
    snap = snapshot("dev", (("tasklane:maxAttempts", -1),))
    found = stack_violations(snap, "dev")
    assert [(rule, "unbounded" in message) for _, rule, message in found] == [
        ("queue-bounded-and-rate-limited", True)]


def test_production_without_deletion_protection_is_caught_and_dev_is_not() -> None:
    prod = snapshot("prod", (("tasklane:deletionProtection", False),))
    assert [(rule, message) for _, rule, message in stack_violations(prod, "prod")] == [
        ("prod-deletion-protection",
         "stack 'prod' turns deletion protection off on the Cloud Run service; keep it on in production")]
    assert stack_violations(snapshot("dev"), "dev") == []
    assert stack_violations(prod, "prod-eu") != [], "any stack whose name starts with prod"


def test_the_stack_is_read_from_the_urn() -> None:
    assert stack_of("urn:pulumi:prod-eu::tasklane::gcp:cloudrunv2/service:Service::svc") == "prod-eu"


def test_production_without_database_delete_protection_is_caught_and_dev_is_not() -> None:
    prod = snapshot("prod", (("tasklane:firestoreDeleteProtection", False),))
    assert stack_violations(prod, "prod") == [(
        "tasklane-prod-firestore", "prod-deletion-protection",
        "stack 'prod' leaves delete protection off on the Firestore database 'tasklane-prod-db' (idempotency keys "
        "and dead letters); keep it on in production")]
    assert stack_violations(snapshot("dev"), "dev") == []
    unset = copy.deepcopy(one(snapshot("prod"), "gcp:firestore/database:Database").inputs)
    del unset["deleteProtectionState"]
    assert [rule for rule, _ in violations("gcp:firestore/database:Database", unset, "prod")] == [
        "prod-deletion-protection"]


def test_a_production_stack_without_the_dead_letter_alert_is_caught() -> None:
    snap = snapshot("prod")
    without = StackSnapshot([r for r in snap.resources if not r.name.endswith("-alert-dead-letter")], snap.outputs)
    assert stack_violations(without, "prod") == [(
        "(stack)", "prod-dead-letter-alert",
        "stack 'prod' has no alert on dead letters; a production task that dies must page someone")]
    # The gave-up alert (one kind only) does not count as the dead-letter alert; dev needs neither.
    assert stack_violations(without, "dev") == []
