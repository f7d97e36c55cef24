"""The console's JSON endpoints and its safety (the page itself is walked in a browser in tests/e2e)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from google.cloud import tasks_v2

from tasklane.core import wire
from tasklane.core.dead_letter import DeadLetter
from tasklane.core.dead_letter_store import DeadLetterStore, FileDeadLetterStore
from tasklane.core.firestore_dead_letters import FirestoreDeadLetterStore
from tasklane.core.task_context import TaskContext
from tasklane.emulator import dead_letters
from tasklane.emulator.clock import ManualClock
from tasklane.emulator.console import BODY_SHOWN, ConsoleConfig
from tasklane.emulator.dead_letters import (
    CombinedLetters,
    HandlerLogLetters,
    LetterSource,
    directory_letters,
    firestore_letters,
)
from tasklane.emulator.server import EmulatorServer
from tests.emulator.conftest import PARENT, Target, client_for, make_queue, task_gone, wait_for
from tests.helpers import free_port

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
    store = FileDeadLetterStore(tmp_path / "dead-letters")
    letter = DeadLetter.capture("final_attempt_failed", "HTTP 503", TaskContext(queue_name="typed", task_name="t-3"),
                                "POST", "/tasks/update_inventory",
                                {"Content-Type": "application/json", wire.IDEMPOTENCY_KEY_HEADER: "inventory-o-3"},
                                b'{"orderId": "o-3"}')
    letter_id = asyncio.run(store.put(letter))
    emulator = make_emulator(console=ConsoleConfig(letters=directory_letters(tmp_path / "dead-letters"),
                                                   replay_url=target.url, replay_oidc_email=INVOKER))
    client = client_for(emulator)
    queue = make_queue(client, "typed")
    client.pause_queue(name=queue.name)
    assert act(emulator.http_url, "replay", letter_id, token_of(emulator.http_url))[0] == 200
    [listed] = client.list_tasks(parent=queue.name)
    task = client.get_task(request={"name": listed.name, "response_view": tasks_v2.Task.View.FULL})
    assert task.http_request.url == f"{target.url}/tasks/update_inventory"
    assert json.loads(task.http_request.body) == {"orderId": "o-3"}
    fresh = task.http_request.headers[wire.IDEMPOTENCY_KEY_HEADER]
    assert fresh.startswith("inventory-o-3~replay-")
    stored = asyncio.run(store.get(letter_id))
    assert stored is not None and stored.replays[0].idempotency_key == fresh


@pytest.fixture(params=["file", "firestore"])
def letter_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[DeadLetterStore, LetterSource]:
    """A dead-letter store as the handler writes it, and the console's source reading that same store: files,
    or a fresh database in Google's Firestore emulator (the session's)."""
    if request.param == "file":
        return FileDeadLetterStore(tmp_path / "dead-letters"), directory_letters(tmp_path / "dead-letters")
    from tests.stores.conftest import fresh_firestore

    firestore = fresh_firestore(request.getfixturevalue("firestore_emulator"))
    return FirestoreDeadLetterStore(firestore), firestore_letters(firestore.project, firestore.database)


def stored_letter_of(task: str, body: bytes) -> DeadLetter:
    return DeadLetter.capture("final_attempt_failed", "HTTP 500 on the final attempt",
                              TaskContext(queue_name="dead", task_name=task, retry_count=4), "POST", "/process-order",
                              {"Content-Type": "application/json", "Authorization": "Bearer secret"}, body)


def test_dead_letters_from_the_store_and_the_handler_log_are_shown_whole_and_replayed(
        make_emulator: Any, target: Target, tmp_path: Path, letter_store: tuple[DeadLetterStore, LetterSource],
        ) -> None:
    store, source = letter_store
    # Larger than a Firestore document holds, so there it is kept in several chunks beneath the letter.
    big = json.dumps({"orderId": "o-9", "idempotencyKey": "k-9", "notes": "n" * 700_000}).encode()
    stored_id = asyncio.run(store.put(stored_letter_of("t-2", big)))
    log = tmp_path / "handler.log"
    log.write_text("not json\n" + "\n".join(log_letter("a" * 32, b'{"action": "update_inventory", "sku": 1}',
                                                        parts=3)) + "\n")
    emulator = make_emulator(console=ConsoleConfig(letters=CombinedLetters([source, HandlerLogLetters(log)]),
                                                   replay_url=target.url, replay_oidc_email=INVOKER))
    client = client_for(emulator)
    queue = make_queue(client, "dead")
    client.pause_queue(name=queue.name)
    base = emulator.http_url
    shown = call(f"{base}/console/api/dead-letters")[1]
    assert shown["total"] == 2 and source.description in shown["source"]
    by_id = {letter["id"]: letter for letter in shown["letters"]}
    assert json.loads(by_id["a" * 32]["body"]["text"]) == {"action": "update_inventory", "sku": 1}
    assert by_id["a" * 32]["kind"] == "rejected"
    from_store = by_id[stored_id]
    assert (from_store["kind"], from_store["attempt"], from_store["taskName"]) == ("final_attempt_failed", 5, "t-2")
    assert from_store["body"]["bytes"] == len(big) and from_store["bodySha256"] == hashlib.sha256(big).hexdigest()
    assert from_store["body"]["text"] == big[:BODY_SHOWN].decode(), "the body's start, read from the store"
    assert "Authorization" not in from_store["headers"]
    assert call(f"{base}/console/api/overview")[1]["deadLetters"] == 2

    token = token_of(base)
    status, replayed = act(base, "replay", stored_id, token)
    assert status == 200, replayed
    [listed] = client.list_tasks(parent=queue.name)
    task = client.get_task(request={"name": listed.name, "response_view": tasks_v2.Task.View.FULL})
    assert task.http_request.url == f"{target.url}/process-order"
    assert task.http_request.oidc_token.service_account_email == INVOKER
    body = json.loads(task.http_request.body)
    assert body["notes"] == "n" * 700_000, "the whole body is replayed"
    assert body["orderId"] == "o-9" and re.fullmatch(r"k-9~replay-[0-9a-f]{8}", body["idempotencyKey"])
    # Recorded where the letter is kept: the operators' CLI (which reads this store) sees the replay.
    kept = asyncio.run(store.get(stored_id))
    assert kept is not None and [(r.task_name, r.idempotency_key) for r in kept.replays] == [
        (task.name, body["idempotencyKey"])]
    shown_again = next(x for x in call(f"{base}/console/api/dead-letters")[1]["letters"] if x["id"] == stored_id)
    assert [r["taskName"] for r in shown_again["replays"]] == [task.name]
    assert act(base, "replay", "c" * 32, token)[0] == 400

    with log.open("a") as appended:  # the log is read incrementally: letters appended later show up
        appended.write("\n".join(log_letter("d" * 32, b"\xff\x00binary")) + "\n")
    assert call(f"{base}/console/api/dead-letters")[1]["total"] == 3
    binary = next(x for x in call(f"{base}/console/api/dead-letters")[1]["letters"] if x["id"] == "d" * 32)
    assert binary["body"]["as"] == "hex" and binary["body"]["text"].startswith("ff 00")


def test_a_dead_letter_store_that_does_not_answer_is_said_so_and_the_rest_still_works(
        make_emulator: Any, client: tasks_v2.CloudTasksClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setattr(dead_letters, "STORE_SECONDS", 1.0)
    emulator = make_emulator(console=ConsoleConfig(letters=firestore_letters("tasklane-gone", "letters")))
    make_queue(client_for(emulator), "alive")
    status, overview = call(f"{emulator.http_url}/console/api/overview")
    assert status == 200 and [q["id"] for q in overview["queues"]] == ["alive"]
    assert overview["deadLetters"] is None
    assert overview["deadLettersUnavailable"].startswith("the Firestore database letters of project tasklane-gone")
    status, answer = call(f"{emulator.http_url}/console/api/dead-letters")
    assert status == 503 and "did not answer within 1 s" in answer["error"]
