"""A queue's HttpTarget overrides every HTTP task's URL, method, headers and token when it is sent.

Source: target.proto (`HttpTarget`, `UriOverride`): "When specified at the Queue level, all tasks with HttpRequest
are overridden according to the target". Before, the emulator stored the override and sent each task as created.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.server import EmulatorServer
from tests.emulator.conftest import PARENT, Target, make_queue, task_gone, wait_for

UNREACHABLE = "http://127.0.0.1:9"
"""The discard port: a task sent there as created would never reach the target."""


def claims(authorization: str | None) -> dict[str, Any]:
    assert authorization is not None and authorization.startswith("Bearer ")
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def port_of(target: Target) -> int:
    port = urlsplit(target.url).port
    assert port is not None
    return port


def test_every_part_of_the_override_applies_when_always(client: tasks_v2.CloudTasksClient, target: Target,
                                                        clock: ManualClock, emulator: EmulatorServer) -> None:
    target.answer("/overridden?y=2", 200)
    queue = make_queue(client, "always", http_target={
        "uri_override": {"scheme": "HTTP", "host": "127.0.0.1", "port": port_of(target),
                         "path_override": {"path": "/overridden"}, "query_override": {"query_params": "y=2"}},
        "http_method": "PUT",
        "header_overrides": [{"header": {"key": "X-Queue", "value": "from-queue"}},
                             {"header": {"key": "x-task", "value": "replaced"}},
                             {"header": {"key": "User-Agent", "value": "ignored, it is reserved"}}],
        "oidc_token": {"service_account_email": "invoker@p.iam.gserviceaccount.com", "audience": "https://aud.example"}})
    task = client.create_task(parent=queue.name, task={"http_request": {
        "url": f"{UNREACHABLE}/orig?x=1", "headers": {"X-Task": "own", "X-Kept": "kept"}, "body": b"payload",
        "oidc_token": {"service_account_email": "task@p.iam.gserviceaccount.com"}}})
    [received] = wait_for(lambda: target.on("/overridden?y=2"), message="the task at the overridden URL")
    assert (received.method, received.body) == ("PUT", b"payload")
    assert received.header("X-Queue") == "from-queue" and received.header("X-Kept") == "kept"
    assert received.header("X-Task") == "replaced" and [n for n, _ in received.headers].count("X-Task") == 0
    assert received.header("User-Agent") == "Google-Cloud-Tasks"
    token = claims(received.header("Authorization"))
    assert (token["email"], token["aud"]) == ("invoker@p.iam.gserviceaccount.com", "https://aud.example")
    wait_for(lambda: task_gone(client, task.name))
    # The task itself is unchanged: the override applies when it is sent.
    with urllib.request.urlopen(f"{emulator.http_url}/v1/attempts", timeout=10) as answer:  # noqa: S310 - loopback
        attempts = json.loads(answer.read())["attempts"]
    assert [a["url"] for a in attempts if a["task"] == task.name] == [f"{target.url}/overridden?y=2"]


def test_if_not_exists_fills_in_only_what_the_task_url_lacks(client: tasks_v2.CloudTasksClient, target: Target,
                                                             clock: ManualClock) -> None:
    target.answer("/own?mine=1", 200)
    target.answer("/filled?q=queue", 200)
    queue = make_queue(client, "fill", http_target={"uri_override": {
        "host": "example.invalid", "port": 9, "path_override": {"path": "/filled"},
        "query_override": {"query_params": "q=queue"}, "uri_override_enforce_mode": "IF_NOT_EXISTS"}})
    client.create_task(parent=queue.name, task={"http_request": {"url": f"{target.url}/own?mine=1"}})
    client.create_task(parent=queue.name, task={"http_request": {"url": target.url}})
    wait_for(lambda: target.on("/own?mine=1") and target.on("/filled?q=queue"), message="both tasks")


def test_a_method_override_without_a_body_drops_the_tasks_body(client: tasks_v2.CloudTasksClient, target: Target,
                                                               clock: ManualClock) -> None:
    target.answer("/get", 200)
    queue = make_queue(client, "get", http_target={"http_method": "GET"})
    client.create_task(parent=queue.name, task={"http_request": {"url": f"{target.url}/get", "body": b"dropped"}})
    [received] = wait_for(lambda: target.on("/get"))
    assert (received.method, received.body) == ("GET", b"")


def test_a_queue_oauth_token_replaces_the_tasks_oidc_token(client: tasks_v2.CloudTasksClient, target: Target,
                                                           clock: ManualClock) -> None:
    target.answer("/oauth", 200)
    queue = make_queue(client, "oauth", http_target={"oauth_token": {
        "service_account_email": "api@p.iam.gserviceaccount.com", "scope": "https://www.googleapis.com/auth/cloud"}})
    client.create_task(parent=queue.name, task={"http_request": {
        "url": f"{target.url}/oauth", "oidc_token": {"service_account_email": "task@p.iam.gserviceaccount.com"}}})
    [received] = wait_for(lambda: target.on("/oauth"))
    assert received.header("Authorization") == "Bearer ya29.tasklane-emulator-oauth-token"


@pytest.mark.parametrize(("http_target", "refusal"), [
    ({"uri_override": {"host": ""}}, "UriOverride.host must be a host name"),
    ({"uri_override": {"host": "evil.example/path"}}, "UriOverride.host must be a host name"),
    ({"uri_override": {"host": "user@evil.example"}}, "UriOverride.host must be a host name"),
    ({"uri_override": {"port": 70000}}, "UriOverride.port must be between 1 and 65535"),
    ({"uri_override": {"port": -1}}, "UriOverride.port must be between 1 and 65535"),
    ({"uri_override": {"path_override": {"path": "/a b"}}}, "pathOverride.path must not contain spaces"),
    ({"uri_override": {"query_override": {"query_params": "a=1#frag"}}}, "queryParams must not contain"),
    ({"oidc_token": {"service_account_email": "a@p.iam.gserviceaccount.com"}}, "oidcToken needs both"),
    ({"oauth_token": {"service_account_email": "a@p.iam.gserviceaccount.com"}}, "oauthToken needs both"),
])
def test_an_override_no_task_could_be_sent_with_is_refused(client: tasks_v2.CloudTasksClient,
                                                           http_target: dict[str, Any], refusal: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match=refusal):
        make_queue(client, "refused", http_target=http_target)


@pytest.mark.parametrize("field", ["http_method", "scheme", "uri_override_enforce_mode"])
def test_an_enum_number_the_proto_does_not_have_is_refused(client: tasks_v2.CloudTasksClient, field: str) -> None:
    queue = tasks_v2.Queue.pb()(name=f"{PARENT}/queues/enum")
    if field == "http_method":
        queue.http_target.http_method = 99
    else:
        setattr(queue.http_target.uri_override, field, 99)
    with pytest.raises(api_exceptions.InvalidArgument, match=" 99 is not "):
        client.create_queue(parent=PARENT, queue=tasks_v2.Queue.wrap(queue))
