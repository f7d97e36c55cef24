"""The guardrails, as plain functions of a resource's type, its properties and the stack's name.

`pulumi preview/up --policy-pack policy` runs them through the pack in __main__.py; the tests run
them directly against the mocked stack of every committed stack file and against unsafe variants.
Properties are the resource's inputs as Pulumi hands them to policies (camelCase).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SERVICE = "gcp:cloudrunv2/service:Service"
SERVICE_IAM_TYPES = ("gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
                     "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
                     "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy",
                     # The v1 resources grant on the same service.
                     "gcp:cloudrun/iamMember:IamMember", "gcp:cloudrun/iamBinding:IamBinding",
                     "gcp:cloudrun/iamPolicy:IamPolicy")
IAM_TYPE = re.compile(r"^gcp:[^:]+/[^:]*iam(member|binding|policy):", re.I)
"""Any IAM grant pulumi-gcp has: projectIamMember, queueIamBinding, serviceaccount/iAMMember, bucketIAMPolicy, ..."""
QUEUE = "gcp:cloudtasks/queue:Queue"
DATABASE = "gcp:firestore/database:Database"
ALERT_POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
PUBLIC = ("allUsers", "allAuthenticatedUsers")
DEFAULT_COMPUTE_ACCOUNT = re.compile(r"^(\d+-compute@developer|[a-z][a-z0-9.:-]*@appspot)\.gserviceaccount\.com$")
"""The default compute account, and App Engine's default account, which also holds Editor by default."""
CLOUD_RUN_DEFAULT_TIMEOUT = 300.0
DEADLINE_VARIABLE = "TASKLANE_TASK_DISPATCH_DEADLINE"

Props = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[str, Props, str], list[str]]
    """(resource type, properties, stack name) -> violation messages."""


def _seconds(duration: str | None) -> float | None:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration or "")
    return float(match.group(1)) if match else None


def _containers(props: Props) -> list[Props]:
    return list((props.get("template") or {}).get("containers") or [])


def no_public_invoker(resource_type: str, props: Props, stack: str) -> list[str]:
    if resource_type == SERVICE and props.get("invokerIamDisabled") is True:
        return ["the Cloud Run service has its invoker IAM check disabled: anyone could call it"]
    if resource_type in SERVICE_IAM_TYPES:
        public = sorted({p for p in PUBLIC for principal in _principals(props) if p in principal})
        if public:
            return [f"{' and '.join(public)} may invoke the Cloud Run service; grant roles/run.invoker to the "
                    "invoker service account only"]
    return []


def _principals(props: Props) -> list[str]:
    return [str(p) for p in [props.get("member"), *(props.get("members") or []), props.get("policyData")] if p]


def no_public_grant(resource_type: str, props: Props, stack: str) -> list[str]:
    """Any IAM grant to everyone: actAs on the invoker account, enqueuer on the queue, a bucket, a project."""
    if resource_type in SERVICE_IAM_TYPES or not IAM_TYPE.match(resource_type):
        return []  # the service's own grants are no-public-invoker's, with its own message
    public = sorted({p for p in PUBLIC for principal in _principals(props) if p in principal})
    if public:
        return [f"{' and '.join(public)} granted {props.get('role') or 'a role'} on {resource_type.split(':')[1]}: "
                "nothing in the pipeline is public; grant named identities only"]
    return []


def no_default_compute_account(resource_type: str, props: Props, stack: str) -> list[str]:
    if resource_type != SERVICE:
        return []
    account = (props.get("template") or {}).get("serviceAccount")
    if not account:
        return ["the Cloud Run service sets no service account, so it runs as the default compute account "
                "(which holds Editor); set template.serviceAccount to its own runtime account"]
    if DEFAULT_COMPUTE_ACCOUNT.match(account):
        return [f"the Cloud Run service runs as the default compute account {account}; give it its own account"]
    return []


def image_pinned_by_digest(resource_type: str, props: Props, stack: str) -> list[str]:
    if resource_type != SERVICE:
        return []
    return [f"container image {container.get('image')!r} is not pinned by digest (@sha256:…); a reused tag "
            "does not roll a new revision" for container in _containers(props)
            if "@sha256:" not in str(container.get("image", ""))]


def queue_bounded_and_rate_limited(resource_type: str, props: Props, stack: str) -> list[str]:
    if resource_type != QUEUE:
        return []
    problems = []
    retry = props.get("retryConfig") or {}
    if retry.get("maxAttempts") in (None, -1):
        problems.append("the queue's retryConfig.maxAttempts is unset or -1 (unbounded); set a number of attempts "
                        "so a task that keeps failing reaches the handler's dead letter")
    rate = (props.get("rateLimits") or {}).get("maxDispatchesPerSecond")
    if not rate:
        problems.append("the queue sets no rateLimits.maxDispatchesPerSecond; set one the handler can absorb")
    return problems


def timeout_covers_deadline(resource_type: str, props: Props, stack: str) -> list[str]:
    if resource_type != SERVICE:
        return []
    timeout = _seconds((props.get("template") or {}).get("timeout")) or CLOUD_RUN_DEFAULT_TIMEOUT
    for container in _containers(props):
        for env in container.get("envs") or []:
            if env.get("name") == DEADLINE_VARIABLE:
                deadline = _seconds(env.get("value"))
                if deadline is not None and timeout < deadline:
                    return [f"the request timeout ({timeout:g}s) is shorter than the task dispatch deadline "
                            f"({deadline:g}s): slow tasks would get 504 and be retried while still running"]
    return []


def prod_deletion_protection(resource_type: str, props: Props, stack: str) -> list[str]:
    if not stack.startswith("prod"):
        return []
    if resource_type == SERVICE and props.get("deletionProtection") is False:
        return [f"stack {stack!r} turns deletion protection off on the Cloud Run service; keep it on in production"]
    if resource_type == DATABASE and props.get("deleteProtectionState") != "DELETE_PROTECTION_ENABLED":
        return [f"stack {stack!r} leaves delete protection off on the Firestore database {props.get('name')!r} "
                "(idempotency keys and dead letters); keep it on in production"]
    return []


RULES = (
    Rule("no-public-invoker", "Nobody outside the invoker account may call the Cloud Run service.", no_public_invoker),
    Rule("no-public-grant", "No IAM grant anywhere in the stack is to allUsers or allAuthenticatedUsers.",
         no_public_grant),
    Rule("no-default-compute-account", "The service runs as its own account, not the default compute account.",
         no_default_compute_account),
    Rule("image-pinned-by-digest", "The service's image is pinned by @sha256 digest.", image_pinned_by_digest),
    Rule("queue-bounded-and-rate-limited", "The queue bounds attempts and limits its dispatch rate.",
         queue_bounded_and_rate_limited),
    Rule("timeout-covers-deadline", "The request timeout is at least the task dispatch deadline.",
         timeout_covers_deadline),
    Rule("prod-deletion-protection", "Production stacks keep deletion protection on (service and database).",
         prod_deletion_protection),
)


@dataclass(frozen=True)
class StackRule:
    name: str
    description: str
    check: Callable[[list[tuple[str, Props]], str], list[str]]
    """(every resource's (type, properties), stack name) -> violation messages."""


def _is_dead_letter_alert(props: Props) -> bool:
    """An alert on the dead-letter metric for every kind (not narrowed to one kind by a label)."""
    for condition in props.get("conditions") or []:
        filter_ = str((condition.get("conditionThreshold") or {}).get("filter", ""))
        if re.search(r'metric\.type="logging\.googleapis\.com/user/[^"]+/dead_letters"', filter_) and \
                "metric.label.kind" not in filter_:
            return True
    return False


def prod_has_dead_letter_alert(resources: list[tuple[str, Props]], stack: str) -> list[str]:
    if not stack.startswith("prod"):
        return []
    if any(kind == ALERT_POLICY and _is_dead_letter_alert(props) for kind, props in resources):
        return []
    return [f"stack {stack!r} has no alert on dead letters; a production task that dies must page someone"]


STACK_RULES = (
    StackRule("prod-dead-letter-alert", "Production stacks alert on every dead letter.", prod_has_dead_letter_alert),
)


def stack_of(urn: str) -> str:
    """The stack in a URN: urn:pulumi:STACK::PROJECT::TYPE::NAME."""
    return urn.split("::", 1)[0].rsplit(":", 1)[-1]


def violations(resource_type: str, props: Props, stack: str) -> list[tuple[str, str]]:
    """(rule name, message) for every rule `resource` breaks."""
    return [(rule.name, message) for rule in RULES for message in rule.check(resource_type, props, stack)]
