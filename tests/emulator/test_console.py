"""The console's JSON endpoints and its safety (the page itself is walked in a browser in tests/e2e)."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from google.cloud import tasks_v2

from tasklane.core import wire
from tasklane.emulator.clock import ManualClock
from tasklane.emulator.console import IDEMPOTENCY_KEY_HEADER, ConsoleConfig
from tasklane.emulator.dead_letters import CombinedLetters, DirectoryLetters, HandlerLogLetters
from tasklane.emulator.server import EmulatorServer
from tests.emulator.conftest import PARENT, Target, client_for, make_queue, task_gone, wait_for

INVOKER = "invoker@tasklane-test.iam.gserviceaccount.com"


def call(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def token_of(base: str) -> str:
    status, page = call(f"{base}/")
    assert status == 200
    match = re.search(r'name="tasklane-console-token" content="([^"]+)"', page)
    assert match, "the page embeds the per-run token"
    return match.group(1)


def act(base: str, action: str, name: str, token: str, **headers: str) -> tuple[int, Any]:
    return call(f"{base}/console/api/actions", {"action": action, "name": name},
                {"X-Tasklane-Console": token, **headers})


def test_a_retried_task_shows_every_attempt_its_token_claims_and_its_body_after_it_finished(
        emulator: EmulatorServer, client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    base = emulator.http_url
    url = target.answer("/orders", 503, 200)
    queue = make_queue(client, "shop", retry_config={"min_backoff": "1s", "max_backoff": "1s"})
    name = client.create_task(parent=queue.name, task={"http_request": {
        "url": url, "body": b'{"orderId": "o-1"}', "headers": {"Content-Type": "application/json"},
        "oidc_token": {"service_account_email": INVOKER}}}).name
    wait_for(lambda: call(f"{base}/console/api/task?name={name}")[1]["attempts"][0]["finished"],
             message="the first attempt")
    status, shown = call(f"{base}/console/api/task?name={name}")
    assert status == 200 and shown["exists"] and shown["status"] == "waiting to retry"
    [first] = shown["attempts"]
    assert (first["status"], first["outcome"]) == (503, "retrying")
    assert first["tokenClaims"]["email"] == INVOKER and first["tokenClaims"]["aud"] == url
    assert "eyJ" not in json.dumps(shown), "the raw token never reaches the page"
    assert shown["body"]["as"] == "json" and json.loads(shown["body"]["text"]) == {"orderId": "o-1"}

    clock.advance(1)
    emulator.dispatcher.wake()  # type: ignore[union-attr]
    wait_for(lambda: task_gone(client, name), message="the second attempt to succeed")
    status, finished = call(f"{base}/console/api/task?name={name}")
    assert not finished["exists"] and finished["status"] == "finished: succeeded (HTTP 200)"
    assert [(a["attempt"], a["status"], a["outcome"]) for a in finished["attempts"]] == [
        (1, 503, "retrying"), (2, 200, "succeeded")]
    assert all(a["latencyMs"] is not None and a["latencyMs"] >= 0 for a in finished["attempts"])
    assert json.loads(finished["body"]["text"]) == {"orderId": "o-1"}, "the body is kept from the attempts"

    overview = call(f"{base}/console/api/overview")[1]
    [listed] = [q for q in overview["queues"] if q["name"] == queue.name]
    assert (listed["state"], listed["depth"], listed["dispatchesLastMinute"]) == ("running", 0, 2)
    assert listed["limitPerMinute"] == 500 * 60 and listed["retry"]["maxAttempts"] == 100


def test_tasks_are_paged_and_searchable_by_name(emulator: EmulatorServer, client: tasks_v2.CloudTasksClient) -> None:
    base = emulator.http_url
    queue = make_queue(client, "big")
    client.pause_queue(name=queue.name)
    for number in range(120):
        client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/t-{number:03d}",
                                                    "http_request": {"url": "http://127.0.0.1:9/x"}})
    seen: list[str] = []
    after = ""
    while True:
        status, page = call(f"{base}/console/api/tasks?queue={queue.name}&limit=50&after={after}")
        assert status == 200 and page["total"] == 120
        seen += [task["id"] for task in page["tasks"]]
        if not page["next"]:
            break
        after = page["next"]
    assert seen == [f"t-{number:03d}" for number in range(120)]
    found = call(f"{base}/console/api/tasks?queue={queue.name}&q=T-11")[1]
    assert [task["id"] for task in found["tasks"]] == [f"t-11{digit}" for digit in range(10)]
    assert found["next"] is None
    assert call(f"{base}/console/api/tasks?queue={PARENT}/queues/none")[0] == 404


def test_actions_go_through_the_engine_and_its_refusals_are_shown(
        emulator: EmulatorServer, client: tasks_v2.CloudTasksClient) -> None:
    base = emulator.http_url
    token = token_of(base)
    queue = make_queue(client, "acted")
    assert act(base, "pause", queue.name, token) == (200, {"message": "acted: paused"})
    assert client.get_queue(name=queue.name).state == tasks_v2.Queue.State.PAUSED
    name = client.create_task(parent=queue.name, task={"http_request": {"url": "http://127.0.0.1:9/x"}}).name
    assert act(base, "delete", name, token)[0] == 200
    assert task_gone(client, name)
    status, refused = act(base, "delete", name, token)
    assert status == 409 and refused["error"].startswith("FAILED_PRECONDITION") or "NOT_FOUND" in refused["error"]
    assert act(base, "resume", queue.name, token)[0] == 200
    assert client.get_queue(name=queue.name).state == tasks_v2.Queue.State.RUNNING
    status, refused = act(base, "pause", f"{PARENT}/queues/missing", token)
    assert status == 409 and "NOT_FOUND" in refused["error"]


def test_actions_are_refused_to_other_sites(emulator: EmulatorServer, client: tasks_v2.CloudTasksClient) -> None:
    base = emulator.http_url
    token = token_of(base)
    queue = make_queue(client, "guarded")
    refusals = [act(base, "pause", queue.name, ""),
                act(base, "pause", queue.name, "not-the-token"),
                act(base, "pause", queue.name, token, Origin="http://evil.example"),
                act(base, "pause", queue.name, token, **{"Sec-Fetch-Site": "cross-site"}),
                act(base, "pause", queue.name, token, Host="evil.example")]
    assert [status for status, _ in refusals] == [403] * 5
    assert client.get_queue(name=queue.name).state == tasks_v2.Queue.State.RUNNING
    assert call(f"{base}/", headers={"Host": "rebound.example"})[0] == 421, "no DNS rebinding"
    assert act(base, "pause", queue.name, token, Origin=base, **{"Sec-Fetch-Site": "same-origin"})[0] == 200


def test_attempts_filter_by_queue_task_and_outcome_and_page(
        emulator: EmulatorServer, client: tasks_v2.CloudTasksClient, target: Target) -> None:
    base = emulator.http_url
    good, bad = target.answer("/good", 200), target.answer("/bad", 400)
    first = make_queue(client, "first", retry_config={"max_attempts": 1})
    second = make_queue(client, "second")
    names = [client.create_task(parent=first.name, task={"http_request": {"url": url}}).name
             for url in (good, bad, good, bad, good)]
    other = client.create_task(parent=second.name, task={"http_request": {"url": good}}).name
    wait_for(lambda: len([a for a in call(f"{base}/v1/attempts")[1]["attempts"] if a["finished"]]) == 6)
    assert {a["task"] for a in call(f"{base}/v1/attempts?outcome=gave_up")[1]["attempts"]} == {names[1], names[3]}
    assert [a["task"] for a in call(f"{base}/v1/attempts?queue={second.name}")[1]["attempts"]] == [other]
    assert [a["task"] for a in call(f"{base}/v1/attempts?task={names[2]}")[1]["attempts"]] == [names[2]]
    paged: list[str] = []
    token = ""
    while True:
        page = call(f"{base}/v1/attempts?queue={first.name}&outcome=succeeded&pageSize=2&pageToken={token}")[1]
        paged += [a["task"] for a in page["attempts"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert sorted(paged) == sorted([names[0], names[2], names[4]]) and len(paged) == 3
    assert call(f"{base}/v1/attempts?outcome=failed")[0] == 400
    assert call(f"{base}/v1/attempts?state=gave_up")[0] == 400, "an unknown filter is refused, not ignored"


def log_letter(letter_id: str, body: bytes, parts: int = 1) -> list[str]:
    size = -(-len(body) // parts)
    lines = []
    for part in range(1, parts + 1):
        record: dict[str, Any] = {"id": letter_id, "part": part, "parts": parts,
                                  "body_base64": base64.b64encode(body[(part - 1) * size:part * size]).decode()}
        if part == 1:
            record.update(kind="rejected", reason="orderId is missing", task_name="t-poison", queue_name="dead",
                          attempt=1, method="POST", path="/process-order",
                          headers={"Content-Type": "application/json"})
        lines.append(json.dumps({"severity": "ERROR", "message": "dead-lettered", "tasklane_dead_letter": record}))
    return lines


def test_a_replayed_typed_task_keeps_its_route_and_gets_a_fresh_header_key(
        make_emulator: Any, target: Target, tmp_path: Path) -> None:
    store = tmp_path / "dead-letters"
    store.mkdir()
    (store / f"{'e' * 32}.json").write_text(json.dumps({
        "kind": "final_attempt_failed", "reason": "HTTP 503", "taskName": "t-3", "queueName": "typed",
        "attempt": 5, "method": "POST", "path": "/tasks/update_inventory",
        "headers": [{"name": "Content-Type", "value": "application/json"},
                    {"name": "X-Tasklane-Idempotency-Key", "value": "inventory-o-3"}],
        "firstSeen": "2030-01-01T00:00:00+00:00", "body": base64.b64encode(b'{"orderId": "o-3"}').decode(),
        "replays": []}))
    emulator = make_emulator(console=ConsoleConfig(letters=DirectoryLetters(store), replay_url=target.url,
                                                   replay_oidc_email=INVOKER))
    client = client_for(emulator)
    queue = make_queue(client, "typed")
    client.pause_queue(name=queue.name)
    assert act(emulator.http_url, "replay", "e" * 32, token_of(emulator.http_url))[0] == 200
    [listed] = client.list_tasks(parent=queue.name)
    task = client.get_task(request={"name": listed.name, "response_view": tasks_v2.Task.View.FULL})
    assert task.http_request.url == f"{target.url}/tasks/update_inventory"
    assert json.loads(task.http_request.body) == {"orderId": "o-3"}
    assert task.http_request.headers[IDEMPOTENCY_KEY_HEADER].startswith("inventory-o-3~replay-")
    stored = json.loads((store / f"{'e' * 32}.json").read_text())
    assert stored["replays"][0]["idempotencyKey"] == task.http_request.headers[IDEMPOTENCY_KEY_HEADER]


def test_the_console_names_the_handlers_idempotency_header() -> None:
    assert IDEMPOTENCY_KEY_HEADER == wire.IDEMPOTENCY_KEY_HEADER


def test_dead_letters_from_the_handler_log_and_the_store_are_shown_and_replayed(
        make_emulator: Any, target: Target, tmp_path: Path) -> None:
    log = tmp_path / "handler.log"
    log.write_text("not json\n" + "\n".join(log_letter("a" * 32, b'{"action": "update_inventory", "sku": 1}',
                                                        parts=3)) + "\n")
    store = tmp_path / "dead-letters"
    store.mkdir()
    (store / f"{'b' * 32}.json").write_text(json.dumps({
        "kind": "final_attempt_failed", "reason": "HTTP 500", "taskName": "t-2", "queueName": "dead",
        "attempt": 5, "method": "POST", "path": "/process-order",
        "headers": [{"name": "Content-Type", "value": "application/json"}], "firstSeen": "2030-01-01T00:00:00+00:00",
        "body": base64.b64encode(b'{"orderId": "o-9", "idempotencyKey": "k-9"}').decode(), "replays": []}))
    letters = CombinedLetters([DirectoryLetters(store), HandlerLogLetters(log)])
    emulator = make_emulator(console=ConsoleConfig(letters=letters, replay_url=target.url,
                                                   replay_oidc_email=INVOKER))
    client = client_for(emulator)
    queue = make_queue(client, "dead")
    client.pause_queue(name=queue.name)
    base = emulator.http_url
    shown = call(f"{base}/console/api/dead-letters")[1]
    assert shown["total"] == 2
    by_id = {letter["id"]: letter for letter in shown["letters"]}
    assert json.loads(by_id["a" * 32]["body"]["text"]) == {"action": "update_inventory", "sku": 1}
    assert by_id["a" * 32]["kind"] == "rejected" and by_id["b" * 32]["attempt"] == 5
    assert call(f"{base}/console/api/overview")[1]["deadLetters"] == 2

    token = token_of(base)
    status, replayed = act(base, "replay", "b" * 32, token)
    assert status == 200, replayed
    [listed] = client.list_tasks(parent=queue.name)
    task = client.get_task(request={"name": listed.name, "response_view": tasks_v2.Task.View.FULL})
    assert task.http_request.url == f"{target.url}/process-order"
    assert task.http_request.oidc_token.service_account_email == INVOKER
    body = json.loads(task.http_request.body)
    assert body["orderId"] == "o-9" and body["idempotencyKey"].startswith("k-9~replay-")
    stored = json.loads((store / f"{'b' * 32}.json").read_text())
    assert [r["taskName"] for r in stored["replays"]] == [task.name]
    assert act(base, "replay", "c" * 32, token)[0] == 400

    with log.open("a") as appended:  # the log is read incrementally: letters appended later show up
        appended.write("\n".join(log_letter("d" * 32, b"\xff\x00binary")) + "\n")
    assert call(f"{base}/console/api/dead-letters")[1]["total"] == 3
    binary = next(x for x in call(f"{base}/console/api/dead-letters")[1]["letters"] if x["id"] == "d" * 32)
    assert binary["body"]["as"] == "hex" and binary["body"]["text"].startswith("ff 00")
