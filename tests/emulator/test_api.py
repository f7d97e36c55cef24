"""Every RPC, driven by the official Python clients (sync and async) unmodified over an insecure channel.

Sources: ../shared/reference/cloud-tasks-behaviour.md §2.6 and §3 (queue defaults), §4.8 (views),
§5 (dedup), §6.8 (paging), §10 (queue operations).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport
from google.iam.v1 import iam_policy_pb2
from google.protobuf import field_mask_pb2

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.server import EmulatorServer
from tests.emulator.conftest import PARENT, make_queue

TARGET = "http://127.0.0.1:9/never-called"


def paused_queue(client: tasks_v2.CloudTasksClient, queue_id: str = "q") -> Any:
    queue = make_queue(client, queue_id)
    return client.pause_queue(name=queue.name)


def test_create_queue_fills_the_services_defaults(client: tasks_v2.CloudTasksClient) -> None:
    queue = make_queue(client)
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert (queue.rate_limits.max_dispatches_per_second, queue.rate_limits.max_burst_size,
            queue.rate_limits.max_concurrent_dispatches) == (500, 100, 1000)
    retry = queue.retry_config
    assert (retry.max_attempts, retry.min_backoff.total_seconds(), retry.max_backoff.total_seconds(),
            retry.max_doublings, retry.max_retry_duration.total_seconds()) == (100, 0.1, 3600, 16, 0)
    assert client.get_queue(name=queue.name) == queue


def test_update_queue_is_an_upsert_and_honours_the_mask(client: tasks_v2.CloudTasksClient) -> None:
    name = f"{PARENT}/queues/upserted"
    created = client.update_queue(queue={"name": name, "rate_limits": {"max_dispatches_per_second": 7}})
    assert created.rate_limits.max_dispatches_per_second == 7
    masked = client.update_queue(queue={"name": name, "rate_limits": {"max_dispatches_per_second": 9},
                                        "retry_config": {"max_attempts": 3}},
                                 update_mask=field_mask_pb2.FieldMask(paths=["retry_config.max_attempts"]))
    assert (masked.rate_limits.max_dispatches_per_second, masked.retry_config.max_attempts) == (7, 3)
    assert masked.rate_limits.max_burst_size == 1
    client.pause_queue(name=name)
    everything = client.update_queue(queue={"name": name, "rate_limits": {"max_dispatches_per_second": 50}})
    assert everything.rate_limits.max_dispatches_per_second == 50
    assert everything.rate_limits.max_burst_size == 10, "burst follows the rate (§3.3)"
    assert everything.state == tasks_v2.Queue.State.PAUSED, "UpdateQueue never changes the state (§10.1)"
    with pytest.raises(api_exceptions.InvalidArgument, match="RateLimits.maxDispatchesPerSecond"):
        client.update_queue(queue={"name": name, "rate_limits": {"max_dispatches_per_second": 600}})


def test_list_queues_pages_and_filters(client: tasks_v2.CloudTasksClient) -> None:
    for number in range(5):
        make_queue(client, f"list-{number}")
    client.pause_queue(name=f"{PARENT}/queues/list-3")
    first = client.list_queues(request={"parent": PARENT, "page_size": 2})
    assert [q.name.rsplit("/", 1)[1] for q in first.queues] == ["list-0", "list-1"]
    assert first.next_page_token
    every = [q.name.rsplit("/", 1)[1] for q in client.list_queues(request={"parent": PARENT, "page_size": 2})]
    assert every == [f"list-{n}" for n in range(5)]
    paused = client.list_queues(request={"parent": PARENT, "filter": "state: PAUSED"})
    assert [q.name.rsplit("/", 1)[1] for q in paused] == ["list-3"]
    assert list(client.list_queues(parent="projects/other/locations/us-central1")) == []


def test_pause_resume_and_delete(client: tasks_v2.CloudTasksClient) -> None:
    queue = make_queue(client)
    assert client.pause_queue(name=queue.name).state == tasks_v2.Queue.State.PAUSED
    assert client.resume_queue(name=queue.name).state == tasks_v2.Queue.State.RUNNING
    client.delete_queue(name=queue.name)
    with pytest.raises(api_exceptions.NotFound):
        client.get_queue(name=queue.name)
    with pytest.raises(api_exceptions.FailedPrecondition, match="existed too recently"):
        make_queue(client)


def test_a_deleted_queue_name_can_be_reused_when_the_block_is_off(make_emulator: Any) -> None:
    from tests.emulator.conftest import client_for

    client = client_for(make_emulator(queue_tombstone_seconds=0))
    queue = make_queue(client)
    client.delete_queue(name=queue.name)
    assert make_queue(client).name == queue.name


def test_tasks_are_created_listed_in_pages_shown_in_both_views_and_deleted(
        client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    names = [client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/t-{n}", "http_request": {
        "url": TARGET, "body": b"payload"}}).name for n in range(7)]
    generated = client.create_task(parent=queue.name, task={"http_request": {"url": TARGET}})
    assert generated.name.rsplit("/", 1)[1].isdigit() and len(generated.name.rsplit("/", 1)[1]) == 20
    page = client.list_tasks(request={"parent": queue.name, "page_size": 3})
    assert len(page.tasks) == 3 and page.next_page_token
    listed = list(client.list_tasks(request={"parent": queue.name, "page_size": 3}))
    assert sorted(t.name for t in listed) == sorted([*names, generated.name])
    assert all(t.http_request.body == b"" and t.view == tasks_v2.Task.View.BASIC for t in listed)
    full = list(client.list_tasks(request={"parent": queue.name, "response_view": "FULL"}))
    assert {t.http_request.body for t in full if t.name in names} == {b"payload"}
    client.delete_task(name=names[0])
    with pytest.raises(api_exceptions.NotFound, match="existed recently"):
        client.get_task(name=names[0])
    with pytest.raises(api_exceptions.NotFound, match="Requested entity was not found"):
        client.delete_task(name=names[0])


def test_task_names_are_deduplicated_while_their_tombstone_lasts(client: tasks_v2.CloudTasksClient,
                                                                clock: ManualClock) -> None:
    queue = paused_queue(client)
    task = {"name": f"{queue.name}/tasks/once", "http_request": {"url": TARGET}}
    client.create_task(parent=queue.name, task=task)
    with pytest.raises(api_exceptions.AlreadyExists, match="Requested entity already exists"):
        client.create_task(parent=queue.name, task=task)
    client.delete_task(name=task["name"])
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=queue.name, task=task)
    clock.advance(3601)
    assert client.create_task(parent=queue.name, task=task).name == task["name"]


def test_the_task_tombstone_window_is_configurable(make_emulator: Any, clock: ManualClock) -> None:
    from tests.emulator.conftest import client_for

    client = client_for(make_emulator(task_tombstone_seconds=10))
    queue = paused_queue(client)
    task = {"name": f"{queue.name}/tasks/short-lived", "http_request": {"url": TARGET}}
    client.create_task(parent=queue.name, task=task)
    client.delete_task(name=task["name"])
    clock.advance(9)
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=queue.name, task=task)
    clock.advance(2)
    assert client.create_task(parent=queue.name, task=task).name == task["name"]


def test_the_pytest_fixture_gives_a_running_emulator(cloud_tasks_emulator: Any) -> None:
    client = cloud_tasks_emulator.client()
    queue = client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/from-fixture"})
    assert client.get_queue(name=queue.name).name == queue.name
    assert cloud_tasks_emulator.host.startswith("127.0.0.1:")


def test_purge_deletes_the_queues_tasks_and_keeps_their_names_reserved(client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    for n in range(3):
        client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/p-{n}", "http_request": {
            "url": TARGET}})
    purged = client.purge_queue(name=queue.name)
    assert purged.purge_time.timestamp() > 0
    assert list(client.list_tasks(parent=queue.name)) == []
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/p-0", "http_request": {
            "url": TARGET}})


@pytest.mark.parametrize("method", ["GET", "DELETE", "HEAD"])
def test_a_body_is_allowed_only_with_post_put_or_patch(client: tasks_v2.CloudTasksClient, method: str) -> None:
    queue = paused_queue(client)
    with pytest.raises(api_exceptions.InvalidArgument, match="POST, PUT or PATCH"):
        client.create_task(parent=queue.name, task={"http_request": {"url": TARGET, "http_method": method,
                                                                     "body": b"x"}})
    client.create_task(parent=queue.name, task={"http_request": {"url": TARGET, "http_method": method}})


def test_a_task_over_one_mebibyte_is_refused(client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    with pytest.raises(api_exceptions.InvalidArgument, match="maximum is 1048569 bytes"):
        client.create_task(parent=queue.name, task={"http_request": {"url": TARGET, "body": b"x" * 1_048_576}})
    client.create_task(parent=queue.name, task={"http_request": {"url": TARGET, "body": b"x" * 1_040_000}})


def test_the_stored_task_has_the_default_deadline_and_a_whole_second_create_time(
        client: tasks_v2.CloudTasksClient) -> None:
    queue = paused_queue(client)
    task = client.create_task(parent=queue.name, task={"http_request": {"url": TARGET}})
    assert task.dispatch_deadline.total_seconds() == 600
    assert task.create_time.microsecond == 0
    assert task.http_request.http_method == tasks_v2.HttpMethod.POST
    assert (task.dispatch_count, task.response_count) == (0, 0)


def test_unimplemented_rpcs_say_so(emulator: EmulatorServer) -> None:
    channel = grpc.insecure_channel(emulator.grpc_target)
    call = channel.unary_unary("/google.cloud.tasks.v2.CloudTasks/GetIamPolicy",
                               request_serializer=iam_policy_pb2.GetIamPolicyRequest.SerializeToString,
                               response_deserializer=lambda raw: raw)
    with pytest.raises(grpc.RpcError) as raised:
        call(iam_policy_pb2.GetIamPolicyRequest(resource=f"{PARENT}/queues/q"))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_async_client_drives_every_rpc(emulator: EmulatorServer) -> None:
    async def scenario() -> list[str]:
        client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(
            channel=grpc.aio.insecure_channel(emulator.grpc_target)))
        name = f"{PARENT}/queues/async"
        seen = []
        await client.create_queue(parent=PARENT, queue={"name": name})
        await client.update_queue(queue={"name": name, "retry_config": {"max_attempts": 4}})
        seen.append(str((await client.get_queue(name=name)).retry_config.max_attempts))
        seen.append(str(len([q async for q in await client.list_queues(parent=PARENT)])))
        await client.pause_queue(name=name)
        task = await client.create_task(parent=name, task={"name": f"{name}/tasks/a", "http_request": {
            "url": TARGET}})
        seen.append((await client.get_task(name=task.name)).name.rsplit("/", 1)[1])
        seen.append(str(len([t async for t in await client.list_tasks(parent=name)])))
        ran = await client.run_task(name=task.name)
        seen.append(str(ran.dispatch_count))
        await client.delete_task(name=task.name)
        await client.create_task(parent=name, task={"http_request": {"url": TARGET}})
        await client.purge_queue(name=name)
        await client.resume_queue(name=name)
        await client.delete_queue(name=name)
        return seen

    assert asyncio.run(scenario()) == ["4", "1", "a", "1", "1"]
