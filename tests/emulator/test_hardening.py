"""Faults around the emulator (issue 11, points 9-14): storage that fails or fills up, two emulators on one
state file, state files it cannot use, a port in use, huge responses, tombstones that must not pile up,
and the fault-injection endpoint itself.

The full-disk test uses a real, small tmpfs (mounting needs root, which CI has; elsewhere it is skipped
with the reason, and under CI=true it fails instead). A storage failure that needs no root, a database
switched to read-only under the running emulator, is tested everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.dispatcher import RESPONSE_BYTES_KEPT
from tasklane.emulator.server import EmulatorConfig, EmulatorServer
from tasklane.emulator.store import StateFileError, Store, StoredAttempt
from tasklane.emulator.testing import start_emulator
from tests.emulator.conftest import PARENT, Target, client_for, make_queue, task_gone, wait_for
from tests.emulator.test_process import REPO, EmulatorProcess, processes  # noqa: F401 - fixture

IN_CI = os.environ.get("CI") == "true"


def tombstones(server: EmulatorServer) -> int:
    assert server.store is not None
    store = server.store
    return int(server.call(lambda: len(list(store.tombstones("task")))))


# -- Storage failing under a running emulator (point 10) -------------------------------------------

def storage_scenario(server: EmulatorServer, client: tasks_v2.CloudTasksClient, target: Target, clock: ManualClock,
                     break_storage: Callable[[], None], mend_storage: Callable[[], None],
                     refused: type[Exception]) -> None:
    """Tasks acknowledged before storage fails are all delivered, the failing one retried after storage
    works again, without a restart; what storage refused was never acknowledged."""
    flaky, fine = target.answer("/flaky", 500, 200), target.answer("/fine", 200)
    queue = make_queue(client, "storage", retry_config={"min_backoff": "1s", "max_backoff": "1s"})
    client.pause_queue(name=queue.name)
    acknowledged = [client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/flaky",
                                                                "http_request": {"url": flaky}}).name]
    acknowledged += [client.create_task(parent=queue.name, task={"http_request": {"url": fine}}).name
                     for _ in range(4)]
    break_storage()
    with pytest.raises(refused) as raised:
        client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/refused", "http_request": {
            "url": fine, "body": b"x" * 200_000}}, retry=None)
    assert "could not save the change, and made none" in str(raised.value)
    with pytest.raises(refused):
        client.resume_queue(name=queue.name, retry=None)
    assert client.get_queue(name=queue.name).state == tasks_v2.Queue.State.PAUSED, "the refused RPC changed nothing"
    assert server.engine is not None
    engine = server.engine
    engine.queues[queue.name].queue.state = tasks_v2.Queue.State.RUNNING  # resume in memory only: dispatch now
    server.call(engine.on_work)
    wait_for(lambda: len(target.on("/flaky")) == 1 and len(target.on("/fine")) == 4, message="the first attempts")
    wait_for(lambda: server.call(lambda: engine.unsaved) > 0, message="outcomes the store could not take")
    mend_storage()
    wait_for(lambda: server.call(lambda: engine.unsaved) == 0, message="the outcomes saved, without a restart")
    clock.advance(1)
    wait_for(lambda: len(target.on("/flaky")) == 2, message="the failed attempt retried")
    wait_for(lambda: all(task_gone(client, name) for name in acknowledged), message="every task done")
    assert server.call(lambda: engine.unsaved) == 0
    with pytest.raises(api_exceptions.NotFound, match="Requested entity was not found"):
        client.get_task(name=f"{queue.name}/tasks/refused")


def reopened(server: EmulatorServer, state: str, clock: ManualClock) -> tuple[EmulatorServer, Any]:
    server.stop_thread()
    again = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, clock=clock, state_file=state))
    return again, client_for(again)


def assert_history_kept(server: EmulatorServer) -> None:
    """The attempts of `storage_scenario`, saved once storage worked again, are read back after a restart."""
    assert server.dispatcher is not None
    outcomes = [(record.task.rsplit("/", 1)[1], record.attempt, record.status, record.outcome)
                for record in server.dispatcher.attempts]
    assert [outcome for outcome in outcomes if outcome[0] == "flaky"] == [
        ("flaky", 1, 500, "retrying"), ("flaky", 2, 200, "succeeded")]
    assert sorted(outcome[1:] for outcome in outcomes if outcome[0] != "flaky") == [(1, 200, "succeeded")] * 4


def test_storage_that_fails_strands_nothing_and_recovers_without_a_restart(
        target: Target, clock: ManualClock, tmp_path: Path) -> None:
    state = str(tmp_path / "state.sqlite")
    server = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, clock=clock, state_file=state))
    assert server.store is not None
    database = server.store._db  # the emulator's own connection: switch it to read-only and back

    def switch(read_only: bool) -> Callable[[], None]:
        return lambda: server.call(lambda: database.execute(f"PRAGMA query_only={int(read_only)}"))

    try:
        storage_scenario(server, client_for(server), target, clock, switch(True), switch(False),
                         api_exceptions.ServiceUnavailable)
        server, client = reopened(server, state, clock)
        assert list(client.list_tasks(parent=f"{PARENT}/queues/storage")) == [], "done is done on disk too"
        assert_history_kept(server)
        with pytest.raises(api_exceptions.AlreadyExists):
            client.create_task(parent=f"{PARENT}/queues/storage", task={
                "name": f"{PARENT}/queues/storage/tasks/flaky", "http_request": {"url": "http://127.0.0.1:9/"}})
    finally:
        server.stop_thread()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of our own, so a test can fill it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if IN_CI:
            pytest.fail("CI runs as root with mount available: the full-disk test must run there")
        pytest.skip("mounting a small tmpfs needs root and mount(8); the read-only storage test covers the rest")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_resource_exhausted_and_strands_no_task(target: Target, clock: ManualClock,
                                                              small_disk: Path) -> None:
    state = str(small_disk / "state.sqlite")
    server = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, clock=clock, state_file=state))
    filler: list[Path] = []
    try:
        storage_scenario(server, client_for(server), target, clock, lambda: filler.append(fill(small_disk)),
                         lambda: filler[0].unlink(), api_exceptions.ResourceExhausted)
        server, client = reopened(server, state, clock)
        assert list(client.list_tasks(parent=f"{PARENT}/queues/storage")) == []
        assert_history_kept(server)
    finally:
        server.stop_thread()


# -- One emulator per state file (point 11) --------------------------------------------------------

def test_a_second_emulator_on_the_same_state_file_refuses_to_start(
        processes: list[EmulatorProcess], tmp_path: Path) -> None:  # noqa: F811 - the fixture
    state = str(tmp_path / "state.sqlite")
    first = EmulatorProcess("--state-file", state)
    processes.append(first)
    second = subprocess.run([sys.executable, "-m", "tasklane.emulator", "--grpc-port", "0", "--http-port", "0",
                             "--state-file", state], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert second.stderr.strip().splitlines() == [
        f"emulator: cannot start: the state file {state} is in use by another emulator (pid {first.process.pid}); "
        "stop it or pass another --state-file"]
    first.process.kill()
    first.process.wait()
    third = EmulatorProcess("--state-file", state)  # the lock goes with the process, even after kill -9
    processes.append(third)
    assert third.stop() == 0


def test_two_in_process_emulators_cannot_share_a_state_file(tmp_path: Path) -> None:
    state = str(tmp_path / "state.sqlite")
    first = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, state_file=state))
    try:
        with pytest.raises(StateFileError, match=f"pid {os.getpid()}"):
            start_emulator(EmulatorConfig(grpc_port=0, http_port=0, state_file=state))
    finally:
        first.stop_thread()
    start_emulator(EmulatorConfig(grpc_port=0, http_port=0, state_file=state)).stop_thread()


# -- Startup refusals are one line (point 12) ------------------------------------------------------

def refusal(*args: str) -> str:
    """The emulator's stderr when it refuses to start with `args`; it must exit non-zero with one line."""
    result = subprocess.run([sys.executable, "-m", "tasklane.emulator", "--grpc-port", "0", "--http-port", "0", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def saved_state(path: Path, tasks: int = 50) -> None:
    server = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, state_file=str(path)))
    try:
        client = client_for(server)
        queue = make_queue(client, "saved")
        client.pause_queue(name=queue.name)
        for _ in range(tasks):
            client.create_task(parent=queue.name, task={"http_request": {"url": "http://127.0.0.1:9/",
                                                                         "body": b"x" * 2000}})
    finally:
        server.stop_thread()


def test_a_corrupt_or_truncated_state_file_is_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(os.urandom(8192))
    assert refusal("--state-file", str(corrupt)).startswith(f"emulator: cannot start: the state file {corrupt} ")
    truncated = tmp_path / "truncated.sqlite"
    saved_state(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    assert str(truncated) in refusal("--state-file", str(truncated))
    garbled = tmp_path / "garbled.sqlite"
    saved_state(garbled, tasks=1)
    with sqlite3.connect(garbled) as database:
        database.execute("UPDATE tasks SET data = x'ffffffff'")
    assert "holds data this emulator cannot read" in refusal("--state-file", str(garbled))
    assert "cannot open the lock file" in refusal("--state-file", str(tmp_path / "missing-dir" / "state.sqlite"))


def test_attempt_records_msgspec_cannot_encode_are_still_kept_as_json_writes_them(tmp_path: Path) -> None:
    """The state file's JSON columns go through msgspec, and what it refuses (a lone surrogate) or writes otherwise
    (NaN) through json.dumps: every record is kept and read back as it was written."""
    path = str(tmp_path / "state.sqlite")
    store = Store(path)
    plain = {"outcome": "succeeded", "status": 200, "request_headers": {"X-Ünïcode": "é"}, "finished": 1.5}
    surrogate = {"outcome": "retrying", "error": "bad \ud800 surrogate"}
    infinite = {"outcome": "retrying", "finished": float("inf")}
    store.sync_tasks([], [], [StoredAttempt(1, "t1", plain, b"{}"), StoredAttempt(2, "t2", surrogate, b""),
                              StoredAttempt(3, "t3", infinite, b"")])
    store.close()
    reopened = Store(path)
    assert [attempt.record for attempt in reopened.attempts(10)] == [plain, surrogate, infinite]
    reopened.close()


def test_a_read_only_state_file_is_one_line(tmp_path: Path) -> None:
    state_dir = tmp_path / "ro"
    state_dir.mkdir()
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None
    if mounted:  # root ignores file modes: use a read-only file system
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state_dir)], check=True)
    try:
        saved_state(state_dir / "state.sqlite", tasks=3)
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(state_dir)], check=True)
        else:
            for path in state_dir.iterdir():
                path.chmod(0o444)
            state_dir.chmod(0o555)
        line = refusal("--state-file", str(state_dir / "state.sqlite"))
        assert line.startswith("emulator: cannot start: ") and "state.sqlite" in line
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(state_dir)], check=False)
        else:
            state_dir.chmod(0o755)


@pytest.mark.parametrize("flag", ["--grpc-port", "--http-port"])
def test_a_port_in_use_is_one_line_naming_it(flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refusal(flag, str(port))
    assert f"127.0.0.1:{port}" in line and line.startswith("emulator: cannot start: cannot listen")


# -- A huge response is not read whole (point 13) --------------------------------------------------

class HugeTarget:
    """Answers 200 with a 1 GiB body, counting the bytes it manages to send before the client hangs up."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/huge"
        self.sent = 0
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
            chunk = b"huge-answer " * 87381
            try:
                while self.sent < 1 << 30:
                    connection.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:
                pass
        self.done.set()


def test_only_the_start_of_a_huge_response_is_read(client: tasks_v2.CloudTasksClient,
                                                   emulator: EmulatorServer) -> None:
    huge = HugeTarget()
    queue = make_queue(client, "huge")
    name = client.create_task(parent=queue.name, task={"http_request": {"url": huge.url}}).name
    wait_for(lambda: task_gone(client, name), message="the task answered 200")
    assert huge.done.wait(30), "the emulator hung up"
    assert huge.sent < 64 << 20, f"the emulator read {huge.sent} bytes of the answer"
    assert emulator.dispatcher is not None
    [record] = [r for r in emulator.dispatcher.attempts if r.task == name]
    assert record.status == 200 and record.outcome == "succeeded"
    assert record.response_body is not None and record.response_body.startswith("huge-answer huge-answer")
    assert len(record.response_body) == RESPONSE_BYTES_KEPT


# -- Tombstones are pruned on a schedule (point 14) ------------------------------------------------

def state_size(state: Path) -> int:
    """The state file with its write-ahead log."""
    wal = state.with_name(state.name + "-wal")
    return state.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_expired_tombstones_leave_memory_and_the_state_file_on_a_schedule(
        target: Target, clock: ManualClock, tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    server = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, clock=clock, state_file=str(state),
                                           task_tombstone_seconds=10, enforce_rate_limits=False))
    try:
        client = client_for(server)
        queue = make_queue(client, "pruned", rate_limits={"max_concurrent_dispatches": 5})
        client.pause_queue(name=queue.name)
        url = target.answer("/done", 200)
        start_size = state_size(state)
        names = [client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/t{n}", "http_request": {
            "url": url, "body": b"y" * 4000}}).name for n in range(300)]
        assert state_size(state) > start_size + 300 * 4000
        client.resume_queue(name=queue.name)
        wait_for(lambda: all(task_gone(client, name) for name in names[-5:]) and len(target.on("/done")) == 300,
                 message="every task delivered")
        assert tombstones(server) == 300
        with pytest.raises(api_exceptions.AlreadyExists):
            client.create_task(parent=queue.name, task={"name": names[0], "http_request": {"url": url}})
        assert server.engine is not None and server.dispatcher is not None
        engine, dispatcher = server.engine, server.dispatcher
        clock.advance(11)
        wait_for(lambda: tombstones(server) == 0, message="the tombstones pruned without any lookup")
        assert server.call(lambda: len(engine._task_tombstones)) == 0
        assert server.call(lambda: len(dispatcher.attempts)) == 0, "attempt records go with their tombstones"
        assert state_size(state) <= start_size, "the state file shrinks back"
        assert client.create_task(parent=queue.name, task={"name": names[0], "http_request": {"url": url}})
    finally:
        server.stop_thread()


# -- The fault-injection endpoint validates before it applies (point 9) -----------------------------

def put(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback emulator
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def faults_now(emulator: EmulatorServer) -> Any:
    with urllib.request.urlopen(f"{emulator.http_url}/v1/faults", timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"null",
                                  b'{"errorRate": NaN}', b'{"errorRate": Infinity}', b'{"errorRate": 1.5}',
                                  b'{"errorRate": -0.1}', b'{"errorRate": "0.5"}', b'{"errorRate": true}',
                                  b'{"latency": {"*": -1}, "errorRate": 0.5}', b'{"latency": {"*": 1e400}}',
                                  b'{"latency": [1]}', b'{"latency": {"GetQueue": "slow"}}',
                                  b'{"errorCode": "NOPE"}', b'{"errorCode": "OK"}', b'{"errorcode": "INTERNAL"}',
                                  b"[" * 100_000])
def test_invalid_faults_are_400_and_change_nothing(emulator: EmulatorServer, body: bytes) -> None:
    status, _ = put(f"{emulator.http_url}/v1/faults", b'{"latency": {"GetQueue": 0.001}, "errorRate": 0.25}')
    assert status == 200
    before = faults_now(emulator)
    status, answer = put(f"{emulator.http_url}/v1/faults", body)
    assert status == 400 and "error" in answer
    assert faults_now(emulator) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                             st.sampled_from(["latency", "errorRate", "errorCode", "*", "GetQueue", "x"]), inner,
                             max_size=3), max_leaves=8))
def test_any_json_to_the_faults_endpoint_is_applied_whole_or_not_at_all(emulator: EmulatorServer,
                                                                       body: Any) -> None:
    before = faults_now(emulator)
    status, answer = put(f"{emulator.http_url}/v1/faults", json.dumps(body).encode())
    assert status in (200, 400)
    if status == 400:
        assert faults_now(emulator) == before
    else:
        assert answer == faults_now(emulator) and 0 <= answer["errorRate"] <= 1
    put(f"{emulator.http_url}/v1/faults", b"{}")


@pytest.mark.parametrize("body", [b"{", b'{"seconds": Infinity}', b'{"seconds": NaN}', b'{"seconds": -1}',
                                  b'{"seconds": true}', b"[]", b'{"seconds": 1e12}', b'{"seconds": 1e300}'])
def test_moving_the_clock_with_invalid_json_is_400(make_emulator: Callable[..., EmulatorServer],
                                                   clock: ManualClock, body: bytes) -> None:
    emulator = make_emulator()
    before = clock.now()
    request = urllib.request.Request(f"{emulator.http_url}/v1/clock", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback emulator
    assert raised.value.code == 400 and clock.now() == before


def test_tasks_deleted_or_purged_before_their_time_leave_no_entry_behind(
        make_emulator: Callable[..., EmulatorServer], clock: ManualClock) -> None:
    """Each task scheduled a day ahead and then deleted left its entry in the queue's schedule heap until that day:
    memory grew with every such task, bounded only by the 30-day horizon."""
    emulator = make_emulator()
    client = client_for(emulator)
    queue = make_queue(client, "ahead")
    ahead = {"seconds": int(clock.now()) + 86400}
    kept = client.create_task(parent=queue.name, task={"schedule_time": {"seconds": int(clock.now()) + 3600},
                                                       "http_request": {"url": "http://127.0.0.1:9/x"}})
    for _ in range(300):
        made = client.create_task(parent=queue.name, task={"schedule_time": ahead,
                                                           "http_request": {"url": "http://127.0.0.1:9/x"}})
        client.delete_task(name=made.name)
    assert emulator.engine is not None
    engine = emulator.engine
    assert emulator.call(lambda: (engine.prune(), len(engine.queues[queue.name].due))[1]) == 1
    assert client.get_task(name=kept.name).name == kept.name
    clock.advance(3601)
    wait_for(lambda: client.get_task(name=kept.name).dispatch_count == 1, message="the kept task still dispatched")
