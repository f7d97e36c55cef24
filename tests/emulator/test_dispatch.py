"""Dispatch semantics on the manual clock, against a scripted loopback target.

Sources (../shared/reference/cloud-tasks-behaviour.md): §1.1 success is 2xx only; §1.3 redirects;
§1.4 a timed-out attempt; §1.5 Retry-After on 429/503; §2.3 both limits must be spent; §2.5/§2.7 the
backoff formula and its documented example; §3.4 token bucket; §3.2 concurrency; §4.3 scheduling;
§4.6-4.7 counters; §7 headers; §8.1/§8.3 the OIDC token; §10.2 pause; §10.5 RunTask.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.dispatcher import OPENING_AT_ONCE
from tasklane.emulator.server import EmulatorServer
from tests.emulator.conftest import Target, make_queue, task_gone, wait_for


def task_at(client: tasks_v2.CloudTasksClient, name: str) -> Any:
    return client.get_task(request={"name": name, "response_view": "FULL"})


def fast_queue(client: tasks_v2.CloudTasksClient, queue_id: str = "q", **retry: Any) -> Any:
    retry = {"min_backoff": "1s", "max_backoff": "1s", "max_attempts": 10, **retry}
    return make_queue(client, queue_id, retry_config=retry)


def wait_attempts(client: tasks_v2.CloudTasksClient, name: str, count: int) -> Any:
    """The task once its attempt number `count` has finished (and been rescheduled)."""
    def finished() -> Any:
        task = task_at(client, name)
        return task if task.dispatch_count == count and task.last_attempt.response_status.message else None
    return wait_for(finished, message=f"attempt {count} of {name}")


def test_the_task_is_delivered_as_created_with_the_cloud_tasks_headers(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    url = target.answer("/orders?x=1", 200)
    queue = fast_queue(client)
    task = client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/order-1", "http_request": {
        "url": url, "http_method": "PUT", "headers": {"X-Mixed-Case": "preserve-me", "content-type": "text/plain"},
        "body": b"hello"}})
    [received] = wait_for(lambda: target.on("/orders?x=1"))
    assert (received.method, received.body) == ("PUT", b"hello")
    names = [name for name, _ in received.headers]
    assert "X-Mixed-Case" in names and "content-type" in names, "header casing is kept"
    assert received.header("User-Agent") == "Google-Cloud-Tasks"
    assert received.header("X-CloudTasks-QueueName") == "q"
    assert received.header("X-CloudTasks-TaskName") == "order-1"
    assert received.header("X-CloudTasks-TaskRetryCount") == "0"
    assert received.header("X-CloudTasks-TaskExecutionCount") == "0"
    assert float(received.header("X-CloudTasks-TaskETA") or 0) == pytest.approx(task.schedule_time.timestamp())
    assert received.header("X-CloudTasks-TaskPreviousResponse") is None
    assert received.header("X-CloudTasks-TaskRetryReason") is None
    assert received.header("Authorization") is None
    wait_for(lambda: task_gone(client, task.name), message="the delivered task to be removed")


def test_retry_headers_count_attempts_and_answered_attempts(client: tasks_v2.CloudTasksClient, target: Target,
                                                            clock: ManualClock) -> None:
    """After two 500s and one 404 the fourth attempt carries RetryCount=3, ExecutionCount=1 (§7.5)."""
    url = target.answer("/work", 500, 500, 404, 200)
    queue = fast_queue(client)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    for attempt in (1, 2, 3):
        wait_attempts(client, name, attempt)
        clock.advance(1)
    wait_for(lambda: task_gone(client, name))
    headers = [(r.header("X-CloudTasks-TaskRetryCount"), r.header("X-CloudTasks-TaskExecutionCount"),
                r.header("X-CloudTasks-TaskPreviousResponse"), r.header("X-CloudTasks-TaskRetryReason"))
               for r in target.on("/work")]
    assert headers == [("0", "0", None, None), ("1", "0", "500", "Internal Server Error"),
                       ("2", "0", "500", "Internal Server Error"), ("3", "1", "404", "Not Found")]


def test_backoff_follows_the_documented_example(client: tasks_v2.CloudTasksClient, target: Target,
                                                clock: ManualClock) -> None:
    """min 10 s, max 300 s, 3 doublings: retries after 10, 20, 40, 80, 160, 240, 300, 300 s (§2.5)."""
    url = target.answer("/fail", 500)
    queue = fast_queue(client, min_backoff="10s", max_backoff="300s", max_doublings=3, max_attempts=20)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    intervals = []
    for attempt in range(1, 9):
        task = wait_attempts(client, name, attempt)
        intervals.append(round(task.schedule_time.timestamp() - clock.now(), 3))
        clock.set(task.schedule_time.timestamp())
    assert intervals == [10, 20, 40, 80, 160, 240, 300, 300]


def test_a_task_is_dropped_after_max_attempts_when_there_is_no_time_limit(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    url = target.answer("/fail", 400)
    queue = fast_queue(client, max_attempts=3)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    for attempt in (1, 2):
        wait_attempts(client, name, attempt)
        clock.advance(1)
    wait_for(lambda: task_gone(client, name), message="the task to be dropped")
    assert len(target.on("/fail")) == 3, "4xx answers are retried like any failure (§1.2)"


def test_retries_stop_only_when_both_attempts_and_duration_are_spent(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    url = target.answer("/fail", 500)
    queue = fast_queue(client, max_attempts=2, max_retry_duration="30s", min_backoff="10s", max_backoff="10s")
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    for attempt in (1, 2, 3):
        wait_attempts(client, name, attempt)
        clock.advance(10)
    wait_for(lambda: task_gone(client, name))
    assert len(target.on("/fail")) == 4, "attempts at 0, 10, 20 and 30 s: the duration was spent at the 4th"


def test_unlimited_attempts_still_stop_at_the_time_limit(client: tasks_v2.CloudTasksClient, target: Target,
                                                         clock: ManualClock) -> None:
    url = target.answer("/fail", 503)
    queue = fast_queue(client, max_attempts=-1, max_retry_duration="20s", min_backoff="10s", max_backoff="10s")
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    for attempt in (1, 2):
        wait_attempts(client, name, attempt)
        clock.advance(10)
    wait_for(lambda: task_gone(client, name))
    assert len(target.on("/fail")) == 3


def test_503_and_429_honour_retry_after_and_other_failures_do_not(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    queue = fast_queue(client)
    delays = {}
    for status in (503, 429, 500):
        url = target.answer(f"/s{status}", (status, {"Retry-After": "120"}))
        name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
        task = wait_attempts(client, name, 1)
        delays[status] = round(task.schedule_time.timestamp() - clock.now())
    assert delays == {503: 120, 429: 120, 500: 1}


def test_a_retry_after_past_30_days_or_not_a_number_does_not_park_the_task(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    """"1e400" and "inf" read as infinity: the task was rescheduled for year 9999, never to run again."""
    queue = fast_queue(client)
    delays = {}
    for index, value in enumerate(("1e400", "inf", "nan", "-5", "9999999999")):
        url = target.answer(f"/ra{index}", (503, {"Retry-After": value}))
        name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
        delays[value] = round(wait_attempts(client, name, 1).schedule_time.timestamp() - clock.now())
    assert delays == {"1e400": 1, "inf": 1, "nan": 1, "-5": 1, "9999999999": 30 * 86400}


def test_no_answer_before_the_deadline_is_a_failed_attempt_reported_as_504(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    url = target.answer("/slow", ("hang", 1.5), 200)
    queue = fast_queue(client)
    name = client.create_task(parent=queue.name, task={"dispatch_deadline": "15s", "http_request": {
        "url": url}}).name
    wait_for(lambda: target.on("/slow"))
    clock.advance(16)
    task = wait_attempts(client, name, 1)
    assert task.response_count == 0
    assert task.last_attempt.response_status.message == "Gateway Timeout"
    clock.advance(1)
    wait_for(lambda: len(target.on("/slow")) == 2)
    retry = target.on("/slow")[1]
    assert (retry.header("X-CloudTasks-TaskPreviousResponse"), retry.header("X-CloudTasks-TaskExecutionCount"),
            retry.header("X-CloudTasks-TaskRetryReason")) == ("504", "0", "Deadline exceeded")


def test_redirects_are_not_followed(client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    target.answer("/elsewhere", 200)
    url = target.answer("/moved", (302, {"Location": target.url + "/elsewhere"}))
    queue = fast_queue(client)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    task = wait_attempts(client, name, 1)
    assert task.last_attempt.response_status.message == "Found"
    assert target.on("/elsewhere") == []


def test_counters_and_attempt_times_are_kept_on_the_task(client: tasks_v2.CloudTasksClient, target: Target,
                                                        clock: ManualClock) -> None:
    url = target.answer("/count", 500)
    queue = fast_queue(client)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    first = wait_attempts(client, name, 1)
    clock.advance(1)
    second = wait_attempts(client, name, 2)
    assert (second.dispatch_count, second.response_count) == (2, 2)
    assert second.first_attempt.dispatch_time == first.first_attempt.dispatch_time
    assert second.last_attempt.dispatch_time.timestamp() == pytest.approx(clock.now())
    assert second.last_attempt.response_status.code == 13  # INTERNAL for a 500


def test_a_scheduled_task_runs_at_its_time(client: tasks_v2.CloudTasksClient, target: Target,
                                           clock: ManualClock) -> None:
    url = target.answer("/later", 200)
    queue = fast_queue(client)
    when = timestamp_pb2.Timestamp()
    when.FromNanoseconds(int((clock.now() + 300) * 1e9))
    client.create_task(parent=queue.name, task={"schedule_time": when, "http_request": {"url": url}})
    clock.advance(299)
    time.sleep(0.2)
    assert target.on("/later") == []
    clock.advance(2)
    wait_for(lambda: target.on("/later"), message="the scheduled task")


@pytest.mark.parametrize("clock", [ManualClock(start=1_800_000_000.0000489)], ids=["between-microseconds"])
def test_times_between_microseconds_are_due_at_once_and_at_their_backoff(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    """Schedule times are whole µs, truncated from a clock that is not: 1_800_000_000.0000489 truncates to
    …000049 µs, which as a float is after the clock. Such a task is due now, not once the clock moves."""
    assert int(clock.now() * 1_000_000) / 1_000_000 > clock.now(), "the start must be such a moment"
    url = target.answer("/between", 503, 200)
    queue = fast_queue(client, min_backoff="0.3s", max_backoff="0.3s")
    task = client.create_task(parent=queue.name, task={"http_request": {"url": url}})
    wait_attempts(client, task.name, 1)
    clock.advance(0.3)  # exactly the backoff, which is not a whole number of float µs either
    wait_for(lambda: len(target.on("/between")) == 2, message="the retry at exactly its backoff")


@pytest.mark.parametrize("clock", [ManualClock(start=1_800_000_000.000017)], ids=["retry-between-microseconds"])
def test_a_sleeping_dispatcher_wakes_when_the_clock_reaches_a_retry_time_between_microseconds(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    """The retry is due at int((start + 0.3) s in µs), which as a float is after start + 0.3: the clock moved to
    exactly start + 0.3 must still wake the dispatcher, which sleeps until then."""
    retry_at = clock.now() + 0.3
    assert int(retry_at * 1_000_000) / 1_000_000 > retry_at, "the start must be such a moment"
    url = target.answer("/asleep", 503, 200)
    queue = fast_queue(client, min_backoff="0.3s", max_backoff="0.3s")
    task = client.create_task(parent=queue.name, task={"http_request": {"url": url}})
    wait_attempts(client, task.name, 1)
    time.sleep(0.1)  # the dispatcher is asleep until the retry time
    clock.advance(0.3)
    wait_for(lambda: len(target.on("/asleep")) == 2, message="the retry, with nothing else to wake the dispatcher")


@pytest.mark.parametrize("clock", [ManualClock(start=1_800_000_000.0000489)], ids=["between-microseconds"])
def test_a_token_due_at_a_third_of_a_second_is_there_at_that_time(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    """3 tasks/s: the clock moved by exactly the token's 1/3 s finds it whole, whatever the float rounding."""
    url = target.answer("/thirds", 200)
    queue = make_queue(client, "thirds", rate_limits={"max_dispatches_per_second": 3})
    client.pause_queue(name=queue.name)
    for _ in range(4):
        client.create_task(parent=queue.name, task={"http_request": {"url": url}})
    client.resume_queue(name=queue.name)
    for sent in range(1, 4):
        wait_for(lambda sent=sent: len(target.on("/thirds")) == sent, message=f"dispatch {sent}")
        clock.advance(1 / 3)
    wait_for(lambda: len(target.on("/thirds")) == 4, message="dispatch 4")


def test_a_paused_queue_keeps_its_tasks_until_resumed(client: tasks_v2.CloudTasksClient, target: Target,
                                                      clock: ManualClock) -> None:
    url = target.answer("/p", 200)
    queue = fast_queue(client)
    client.pause_queue(name=queue.name)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    time.sleep(0.2)
    assert target.on("/p") == [] and not task_gone(client, name)
    client.resume_queue(name=queue.name)
    wait_for(lambda: task_gone(client, name))


def test_run_task_dispatches_at_once_even_when_paused_or_scheduled_later(
        client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    url = target.answer("/now", 500, 200)
    queue = fast_queue(client, min_backoff="30s", max_backoff="30s")
    client.pause_queue(name=queue.name)
    when = timestamp_pb2.Timestamp()
    when.FromNanoseconds(int((clock.now() + 3600) * 1e9))
    name = client.create_task(parent=queue.name, task={"schedule_time": when, "http_request": {"url": url}}).name
    called_at = clock.now()
    shown = client.run_task(name=name)
    assert shown.dispatch_count == 1, "RunTask answers after dispatching"
    failed = wait_attempts(client, name, 1)
    assert failed.schedule_time.timestamp() == pytest.approx(called_at + 30), "from when RunTask was called"
    client.run_task(name=name)
    wait_for(lambda: task_gone(client, name))


def test_run_task_ignores_an_exhausted_rate_limit(client: tasks_v2.CloudTasksClient, target: Target,
                                                  clock: ManualClock) -> None:
    url = target.answer("/limited", 200)
    queue = make_queue(client, "slowlane", rate_limits={"max_dispatches_per_second": 1})
    client.pause_queue(name=queue.name)
    first, second = (client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
                     for _ in range(2))
    client.resume_queue(name=queue.name)
    wait_for(lambda: len(target.on("/limited")) == 1, message="the burst of one")
    time.sleep(0.2)
    assert len(target.on("/limited")) == 1, "the bucket is empty until the clock moves"
    waiting = second if task_gone(client, first) else first
    client.run_task(name=waiting)
    wait_for(lambda: len(target.on("/limited")) == 2, message="RunTask's dispatch despite the empty bucket")


def test_the_rate_limit_is_a_token_bucket(client: tasks_v2.CloudTasksClient, target: Target,
                                          clock: ManualClock) -> None:
    """2 tasks/s with a burst of 1: one at once, then one every half second (§3.4)."""
    url = target.answer("/rate", 200)
    queue = make_queue(client, "rated", rate_limits={"max_dispatches_per_second": 2})
    assert queue.rate_limits.max_burst_size == 1
    client.pause_queue(name=queue.name)
    for _ in range(6):
        client.create_task(parent=queue.name, task={"http_request": {"url": url}})
    client.resume_queue(name=queue.name)
    counts = []
    for _ in range(5):
        time.sleep(0.15)
        counts.append(len(target.on("/rate")))
        clock.advance(0.5)
    assert counts == [1, 2, 3, 4, 5]


def test_retries_take_tokens_from_the_same_bucket(client: tasks_v2.CloudTasksClient, target: Target,
                                                  clock: ManualClock) -> None:
    """A failing task retried every 0.1 s on a 2/s queue is still tried only twice a second (§3.5)."""
    url = target.answer("/flaky", 500)
    queue = make_queue(client, "retrying", rate_limits={"max_dispatches_per_second": 2},
                       retry_config={"min_backoff": "0.1s", "max_backoff": "0.1s", "max_attempts": 100})
    client.create_task(parent=queue.name, task={"http_request": {"url": url}})
    counts = []
    for _ in range(8):
        time.sleep(0.1)
        counts.append(len(target.on("/flaky")))
        clock.advance(0.25)
    assert counts == [1, 1, 2, 2, 3, 3, 4, 4]


def test_never_more_than_max_concurrent_dispatches_in_flight(emulator: EmulatorServer,
                                                             client: tasks_v2.CloudTasksClient,
                                                             target: Target) -> None:
    url = target.answer("/busy", ("hang", 0.3))
    queue = make_queue(client, "narrow", rate_limits={"max_concurrent_dispatches": 3})
    names = [client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name for _ in range(9)]
    wait_for(lambda: all(task_gone(client, name) for name in names), timeout=15)
    assert target.peak_in_flight == 3
    assert emulator.dispatcher is not None and emulator.dispatcher.runtimes[queue.name].peak_in_flight == 3


def test_connections_opened_a_few_at_a_time_never_limit_a_queues_concurrency(
        emulator: EmulatorServer, client: tasks_v2.CloudTasksClient, target: Target) -> None:
    """The dispatcher opens at most OPENING_AT_ONCE connections at a time and reuses kept-alive ones, but
    a slow target still gets as many dispatches at once as the queue allows (Cloud Tasks has no pool)."""
    wide = 2 * OPENING_AT_ONCE
    url = target.answer("/slow", ("hang", 5.0))  # outlasts SYN retries at the test target's small backlog
    queue = make_queue(client, "wide", rate_limits={"max_concurrent_dispatches": wide})
    client.pause_queue(name=queue.name)
    names = [client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name for _ in range(wide)]
    client.resume_queue(name=queue.name)
    wait_for(lambda: all(task_gone(client, name) for name in names), timeout=30)
    assert target.peak_in_flight == wide


def test_a_hanging_target_does_not_stall_other_queues(client: tasks_v2.CloudTasksClient, target: Target) -> None:
    stuck = target.answer("/stuck", ("hang", 3))
    fine = target.answer("/fine", 200)
    slow_queue, quick_queue = make_queue(client, "slow"), make_queue(client, "quick")
    for _ in range(5):
        client.create_task(parent=slow_queue.name, task={"http_request": {"url": stuck}})
    wait_for(lambda: len(target.on("/stuck")) == 5)
    started = time.monotonic()
    names = [client.create_task(parent=quick_queue.name, task={"http_request": {"url": fine}}).name
             for _ in range(5)]
    wait_for(lambda: all(task_gone(client, name) for name in names))
    assert time.monotonic() - started < 2


def test_a_connection_reset_is_a_failed_attempt(client: tasks_v2.CloudTasksClient, target: Target,
                                                clock: ManualClock) -> None:
    url = target.answer("/reset", ("reset",), 200)
    queue = fast_queue(client)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    task = wait_attempts(client, name, 1)
    assert task.response_count == 0
    clock.advance(1)
    wait_for(lambda: task_gone(client, name))


def test_oidc_tokens_verify_against_the_emulators_published_keys(
        emulator: EmulatorServer, client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock) -> None:
    import asyncio

    from tasklane.handler.auth import TokenVerifier
    from tasklane.handler.config import HandlerConfig, TokenCheck

    invoker = "tasklane-invoker@tasklane-test.iam.gserviceaccount.com"
    with_audience = target.answer("/aud", 200)
    url_only = target.answer("/url-only?page=2", 200)
    queue = fast_queue(client)
    client.create_task(parent=queue.name, task={"http_request": {"url": with_audience, "oidc_token": {
        "service_account_email": invoker, "audience": "https://handler.example"}}})
    client.create_task(parent=queue.name, task={"http_request": {"url": url_only, "oidc_token": {
        "service_account_email": invoker}}})
    [first] = wait_for(lambda: target.on("/aud"))
    [second] = wait_for(lambda: target.on("/url-only?page=2"))

    def verify(received: Any, audience: str) -> dict[str, Any]:
        config = HandlerConfig(queue_path=None, invoker_service_account=invoker, task_audience=audience,
                               max_attempts=-1, token_check=TokenCheck.FULL, token_issuers=(emulator.http_url,),
                               token_certs_url=f"{emulator.http_url}/oauth2/v1/certs")
        verifier = TokenVerifier(config, clock=clock.now)
        return asyncio.run(verifier.verify(received.header("Authorization")))

    claims = verify(first, "https://handler.example")
    assert claims["iss"] == emulator.http_url and claims["email_verified"] is True
    assert claims["exp"] - claims["iat"] == 3600 and claims["iat"] == int(clock.now())
    assert claims["sub"].isdigit() and claims["sub"] == claims["azp"]
    assert verify(second, url_only)["aud"] == url_only, "without an audience the URL is the audience (§8.1)"


# -- A name used again while its first owner's attempt still runs --------------------------------------------------

def test_a_queue_created_again_under_its_name_starts_with_nothing_in_flight(
        make_emulator: Any, target: Target, clock: ManualClock) -> None:
    """With queue names not reserved after deletion, the old queue's hanging attempt held the new queue's only
    slot: its task waited for an attempt of a queue that no longer exists (up to the 30-minute deadline)."""
    from tests.emulator.conftest import client_for

    client = client_for(make_emulator(queue_tombstone_seconds=0))
    old_url, new_url = target.answer("/old", ("hang", 3)), target.answer("/new", 200)
    queue = make_queue(client, "again", rate_limits={"max_concurrent_dispatches": 1})
    client.create_task(parent=queue.name, task={"http_request": {"url": old_url}})
    wait_for(lambda: target.on("/old"), message="the old queue's attempt to start")
    client.delete_queue(name=queue.name)
    queue = make_queue(client, "again", rate_limits={"max_concurrent_dispatches": 1})
    client.create_task(parent=queue.name, task={"http_request": {"url": new_url}})
    wait_for(lambda: target.on("/new"), timeout=2, message="the new queue's task while the old attempt hangs")


def test_an_attempt_of_a_deleted_task_does_not_settle_a_new_task_of_that_name(
        make_emulator: Any, target: Target, clock: ManualClock) -> None:
    """With task names not reserved after deletion, the old attempt's answer settled the new task of that name: its
    200 removed the new task as succeeded while the new task's own attempt was still running."""
    from tests.emulator.conftest import client_for

    client = client_for(make_emulator(task_tombstone_seconds=0))
    old_url, new_url = target.answer("/first", ("hang", 1)), target.answer("/second", ("hang", 3))
    queue = fast_queue(client, "names")
    name = f"{queue.name}/tasks/reused"
    client.create_task(parent=queue.name, task={"name": name, "http_request": {"url": old_url}})
    wait_for(lambda: target.on("/first"), message="the first task's attempt to start")
    client.delete_task(name=name)
    client.create_task(parent=queue.name, task={"name": name, "http_request": {"url": new_url}})
    wait_for(lambda: target.on("/second"), message="the new task's attempt to start")
    time.sleep(1.5)  # the first task's attempt has answered 200 by now; the new one's has not
    still = task_at(client, name)
    assert still.http_request.url == new_url and still.dispatch_count == 1
    wait_for(lambda: task_gone(client, name), message="the new task to succeed on its own answer")


# -- Retention ---------------------------------------------------------------------------------------------------

DAY = 86400


def test_a_task_is_deleted_31_days_after_it_was_added_even_if_never_dispatched(
        client: tasks_v2.CloudTasksClient, clock: ManualClock) -> None:
    """§6.5: "A task is deleted 31 days after it was added, whether or not it was dispatched"."""
    queue = fast_queue(client, "kept")
    client.pause_queue(name=queue.name)
    name = client.create_task(parent=queue.name, task={"http_request": {"url": "http://127.0.0.1:9/x"}}).name
    clock.advance(31 * DAY - 5)
    time.sleep(0.3)  # housekeeping has run at the new time
    assert task_at(client, name).dispatch_count == 0
    clock.advance(10)
    wait_for(lambda: task_gone(client, name), message="the task to expire after 31 days")


def test_retrying_forever_ends_at_31_days(client: tasks_v2.CloudTasksClient, target: Target,
                                          clock: ManualClock) -> None:
    """§2.3: unlimited attempts and no retry duration retry forever, but "the 31-day task TTL caps even forever"."""
    url = target.answer("/forever", 500)
    queue = fast_queue(client, "forever", max_attempts=-1, min_backoff=f"{10 * DAY}s", max_backoff=f"{10 * DAY}s")
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    for attempt in (1, 2, 3, 4):  # days 0, 10, 20, 30
        wait_attempts(client, name, attempt)
        clock.advance(10 * DAY)
    wait_for(lambda: task_gone(client, name), message="the task to expire at day 31, before its day-40 attempt")
    assert len(target.on("/forever")) == 4
