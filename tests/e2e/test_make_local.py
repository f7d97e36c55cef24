"""`make local` (python -m local): the samples reach their final states and nothing is left running."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def local_command(tmp_path: Path, *extra: str) -> tuple[list[str], list[int]]:
    ports = [free_port(), free_port(), free_port()]
    return ([sys.executable, "-m", "local", "--grpc-port", str(ports[0]), "--emulator-http-port", str(ports[1]),
             "--handler-port", str(ports[2]), "--state-dir", str(tmp_path / "state"), *extra], ports)


def all_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def test_the_samples_flow_and_reach_their_final_states(tmp_path: Path) -> None:
    command, ports = local_command(tmp_path, "--once")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "transient failure, then success      attempt 1: HTTP 503 → will retry" in out
    assert "transient failure, then success      attempt 2: HTTP 200" in out
    final = out[out.index("final state of each sample"):]
    for label in ("confirmation e-mail", "inventory update", "warehouse notice", "transient failure, then success"):
        assert f"{label:<36} done" in final
    assert "poison: not an order, never retried  rejected and dead-lettered" in final
    assert "export CLOUD_TASKS_EMULATOR_HOST=127.0.0.1:" in out
    assert f"export CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS=http://127.0.0.1:{ports[1]}/\n" in out
    assert "export CLOUDSDK_AUTH_DISABLE_CREDENTIALS=true\n" in out
    assert "gcloud tasks create-http-task --queue=projects/" in out
    assert_dead_letter_listed_and_replayed(out)
    assert "▶ Firestore emulator on 127.0.0.1:" in out and "export FIRESTORE_EMULATOR_HOST=127.0.0.1:" in out
    assert "▶ Pub/Sub emulator on 127.0.0.1:" in out and "/task-operations, as the deployed log sink does" in out
    assert out.startswith(f"▶ Console: http://127.0.0.1:{ports[1]}/"), "the console's URL comes first"
    assert "Press Ctrl-C" not in out, "--once stops by itself"
    assert all_free(ports), "the emulator and handler are stopped"
    assert no_firestore_emulator_left(out)


def assert_dead_letter_listed_and_replayed(out: str) -> None:
    letters = out[out.index("$ tasklane dead-letters list"):]
    assert "rejected" in letters and "update_inventory: invalid OrderRequest: unknown field `sku`" in letters
    assert "$ tasklane dead-letters replay " in letters
    assert "attempt 1: HTTP 200 (processed" in letters


def no_firestore_emulator_left(out: str) -> bool:
    """Nothing of make local's Firestore emulator (gcloud, its script, Java) runs, nor holds its port."""
    port = int(re.search(r"Firestore emulator on 127\.0\.0\.1:(\d+)", out).group(1))  # type: ignore[union-attr]
    found = subprocess.run(["pgrep", "-f", f"port={port}"], capture_output=True, text=True)
    return found.stdout.strip() == "" and all_free([port])


def test_without_the_firestore_emulator_letters_go_to_files_and_the_same_cli_reads_them(tmp_path: Path) -> None:
    command, ports = local_command(tmp_path, "--once", "--no-google-emulators")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no Firestore emulator (--no-google-emulators)" in result.stdout
    assert_dead_letter_listed_and_replayed(result.stdout)
    assert len(list((tmp_path / "state" / "dead-letters").glob("*.json"))) == 2, "the letter and its replay's"


def started(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    """`python -m local` (not --once), once it says it is ready for your own producers."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    out = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        out += line
        if "Press Ctrl-C" in line or not line:
            break
    assert "Press Ctrl-C" in out, out
    return process, out


def interrupted(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    return rest


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def test_ctrl_c_stops_everything_cleanly_and_a_restart_shows_the_finished_samples_attempts(tmp_path: Path) -> None:
    command, ports = local_command(tmp_path)
    console = f"http://127.0.0.1:{ports[1]}"
    process, out = started(command)
    status = subprocess.run([sys.executable, "-m", "local", "status", "--emulator-http-port", str(ports[1])],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert re.search(r"tasklane-dev-queue  running  depth 0  in flight 0  .*outcomes: .*\d+ succeeded", status.stdout)
    # The poison sample's letter, and its replay's: still not an order, so rejected again as a new letter.
    assert "dead letters: 2 " in status.stdout
    if "▶ Firestore emulator on" in out:  # the console reads the handler's store itself, as the CLI does
        assert "(from the Firestore database tasklane-local of project " in status.stdout
    # The transient sample: the one task whose first attempt got a 503.
    [transient] = {a["task"] for a in http_json(f"{console}/v1/attempts")["attempts"] if a["status"] == 503}
    attempts = http_json(f"{console}/v1/attempts?task={transient}")["attempts"]
    assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [(1, 503, "retrying"),
                                                                             (2, 200, "succeeded")]
    rest = interrupted(process)
    assert rest.rstrip().splitlines()[-1].startswith("Stopped: everything is shut down"), rest
    assert all_free(ports), "nothing is left running"
    assert no_firestore_emulator_left(out), "Google's Firestore emulator and its Java process are stopped too"

    again, out = started(command)  # a restart right after Ctrl-C works at once, on the state kept
    try:
        assert "(state kept in" in out
        assert http_json(f"{console}/v1/attempts?task={transient}")["attempts"] == attempts, \
            "a finished sample's attempts are read back after the restart"
        shown = http_json(f"{console}/console/api/task?name={transient}")
        assert shown["status"] == "finished: succeeded (HTTP 200)"
        assert [(a["attempt"], a["status"]) for a in shown["attempts"]] == [(1, 503), (2, 200)]
        exports = dict(re.findall(r"^  export (\w+)=(\S+)$", out, re.MULTILINE))
        show = subprocess.run([sys.executable, "-m", "tasklane.producer", "show", transient], cwd=REPO,
                              capture_output=True, text=True, timeout=60, env={**os.environ, **exports})
        assert show.returncode == 0, show.stderr
        assert show.stdout.startswith(f"{transient}: finished: succeeded on attempt 2 (HTTP 200)"), show.stdout
        status = subprocess.run([sys.executable, "-m", "local", "status", "--emulator-http-port", str(ports[1])],
                                cwd=REPO, capture_output=True, text=True, timeout=30)
        assert re.search(r"outcomes: .*\d+ retrying, \d+ succeeded", status.stdout), status.stdout
    finally:
        interrupted(again)


def test_a_busy_port_is_named(tmp_path: Path) -> None:
    command, ports = local_command(tmp_path, "--once")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[2]))
        squatter.listen()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"port {ports[2]} on 127.0.0.1 is in use" in result.stderr


def test_the_port_probe_counts_a_port_in_time_wait_as_free() -> None:
    from local.__main__ import port_free

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first, so its end of the connection waits in TIME_WAIT
        client.recv(1)
        client.close()
    time.sleep(0.05)
    assert port_free("127.0.0.1", port)


def test_status_says_when_nothing_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "local", "status", "--emulator-http-port", str(free_port())],
                            cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "nothing answers at http://127.0.0.1:" in result.stderr
