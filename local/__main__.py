"""`make local`: the whole pipeline on this machine, no cloud account needed.

Starts the local Cloud Tasks emulator with the dev stack's queue (same rate and retry settings as
Pulumi.dev.yaml) and the handler checking the emulator's tokens in full, enqueues sample orders through
the producer (including one that fails transiently and then succeeds, and one that can never succeed),
shows each one's attempts and final state, lists the dead letter and replays it with the operators' CLI,
then keeps running for your own producers until Ctrl-C. The console (the emulator's HTTP root) shows the
same live in the browser.

    python -m local              # the pipeline, until Ctrl-C
    python -m local --once       # the samples, then stop
    python -m local status       # a running pipeline's queues, recent outcomes and dead letters

State (the emulator's queues, tasks and attempt history, the handler's log) is kept in .tasklane/ across
restarts. Dead letters and idempotency keys go to Google's Firestore emulator when this machine has it (gcloud
and Java), started on a free port and stopped with everything else; otherwise keys stay in the handler and
letters go to files under the state folder. Either way the operators' CLI and the console read that store.
Final failed attempts reach the handler through Google's Pub/Sub emulator when it is there, as they do deployed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = REPO / ".tasklane"
LOCAL_FIRESTORE_DATABASE = "tasklane-local"

SAMPLES = [  # (label, action, payload): what each shows
    ("confirmation e-mail", "send_confirmation", {"orderId": "demo-1001", "customerEmail": "ada@example.com"}),
    ("inventory update", "update_inventory", {"orderId": "demo-1002"}),
    ("warehouse notice", "notify_warehouse", {"orderId": "demo-1003"}),
    ("transient failure, then success", "reserve_stock", {"orderId": "demo-1004"}),
    ("poison: not an order, never retried", "update_inventory", {"sku": "SKU-1"}),
]


class LocalError(RuntimeError):
    pass


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on the port now. SO_REUSEADDR as the servers set it, so a port whose
    last connections are in TIME_WAIT (a restart right after Ctrl-C) counts as free."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


@dataclass
class Child:
    name: str
    process: subprocess.Popen[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator(args: argparse.Namespace, state_dir: Path, stores: dict[str, str], project: str,
                   final_failures: dict[str, str] | None = None) -> tuple[Child, str]:
    command = [sys.executable, "-m", "tasklane.emulator", "--host", args.host, "--grpc-port", str(args.grpc_port),
               "--http-port", str(args.emulator_http_port), "--pulumi-stack", args.stack,
               "--state-file", str(state_dir / "emulator.sqlite"), "--log-level", "WARNING",
               "--task-operations-log", str(state_dir / "task-operations.jsonl"),
               # The console shows the handler's dead letters (the store it keeps them in, and its log) and
               # replays one to the handler with the invoker's token when its original attempts are gone.
               "--dead-letter-log", str(state_dir / "handler.log"),
               "--console-replay-url", f"http://{args.host}:{args.handler_port}",
               "--console-replay-oidc-email", args.invoker]
    environment = dict(os.environ)
    if "TASKLANE_FIRESTORE_DATABASE" in stores:  # the handler's store: Google's Firestore emulator, or files
        command += ["--dead-letter-firestore", f"projects/{project}/databases/{stores['TASKLANE_FIRESTORE_DATABASE']}"]
        environment["FIRESTORE_EMULATOR_HOST"] = stores["FIRESTORE_EMULATOR_HOST"]
    else:
        command += ["--dead-letter-dir", stores["TASKLANE_DEAD_LETTER_DIR"]]
    if final_failures:
        command += ["--final-failures-topic", final_failures["topic"]]
        environment["PUBSUB_EMULATOR_HOST"] = final_failures["host"]
    # Own session: a terminal Ctrl-C reaches only this runner, which then stops the children in order.
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=environment)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    said = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "emulator ready" in line:
            return Child("emulator", process), line.strip()
        said = line.strip() or said
        if not line and process.poll() is not None:
            break
    process.kill()
    raise LocalError(f"the emulator did not start: {said or 'it said nothing'}")


class EmulatorChild:
    """A Google emulator in the runner's list of children."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        self.name = emulator.kind.name
        self.process = emulator.process

    def stop(self) -> None:
        self.emulator.stop()


def start_google_emulator(kind_name: str, args: argparse.Namespace, state_dir: Path,
                          children: list[Any]) -> tuple[Any, str | None]:
    """Google's Firestore or Pub/Sub emulator, started and added to `children`; or None and why it is not."""
    from local.google_emulators import FIRESTORE, PUBSUB, EmulatorFailed, GoogleEmulator, why_unavailable

    kind = {"firestore": FIRESTORE, "pubsub": PUBSUB}[kind_name]
    reason = "--no-google-emulators" if args.no_google_emulators else why_unavailable(kind)
    if reason is not None:
        return None, reason
    emulator = GoogleEmulator(kind, host=args.host, log_path=state_dir / f"{kind_name}-emulator.log")
    try:
        emulator.start()
    except EmulatorFailed as error:
        return None, str(error)
    children.append(EmulatorChild(emulator))
    return emulator, None


def start_stores(args: argparse.Namespace, state_dir: Path, project: str,
                 children: list[Any]) -> tuple[dict[str, str], str]:
    """The handler's (and CLI's) environment for its stores, and a line saying which they are."""
    files = {"TASKLANE_DEAD_LETTER_DIR": str(state_dir / "dead-letters")}
    emulator, reason = start_google_emulator("firestore", args, state_dir, children)
    if emulator is not None:
        return ({**emulator.environment(), "TASKLANE_FIRESTORE_DATABASE": LOCAL_FIRESTORE_DATABASE},
                f"Firestore emulator on {emulator.host_port} (Google's; project {project}, database "
                f"{LOCAL_FIRESTORE_DATABASE}) keeps idempotency keys and dead letters")
    return files, (f"no Firestore emulator ({reason}): idempotency keys stay in the handler, dead letters go to "
                   f"{files['TASKLANE_DEAD_LETTER_DIR']}")


def start_final_failures_route(args: argparse.Namespace, state_dir: Path, project: str, service_url: str,
                               children: list[Any]) -> tuple[dict[str, str] | None, str]:
    """Google's Pub/Sub emulator with a topic for final failed attempts and a push subscription to the
    handler's /task-operations route, as the deployed stack routes them; None and why, when it cannot run."""
    emulator, reason = start_google_emulator("pubsub", args, state_dir, children)
    if emulator is None:
        return None, f"no Pub/Sub emulator ({reason}): tasks given up unseen are only in the task-operations log"
    topic = f"projects/{project}/topics/final-failures"
    with _environment(emulator.environment()):  # the Pub/Sub clients find the emulator only through it
        from google.cloud import pubsub_v1  # type: ignore[attr-defined, import-untyped, unused-ignore]

        pubsub_v1.PublisherClient().create_topic(request={"name": topic})
        pubsub_v1.SubscriberClient().create_subscription(request={
            "name": f"projects/{project}/subscriptions/final-failures-push", "topic": topic,
            "push_config": {"push_endpoint": f"{service_url}/task-operations"}})
    return ({"topic": topic, "host": emulator.host_port},
            f"Pub/Sub emulator on {emulator.host_port} (Google's) routes final failed attempts to "
            f"{service_url}/task-operations, as the deployed log sink does")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_handler(args: argparse.Namespace, environment: dict[str, str], state_dir: Path) -> Child:
    # Appended, not truncated: the log holds the dead letters the console shows across restarts.
    log = open(state_dir / "handler.log", "a")  # noqa: SIM115 - the child holds it until it exits
    process = subprocess.Popen([sys.executable, "-m", "handler"], cwd=REPO, env={**os.environ, **environment},
                               stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{args.host}:{args.handler_port}/", timeout=1).close()  # noqa: S310
            return Child("handler", process)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise LocalError(f"the handler did not start; see {state_dir / 'handler.log'}")


def handler_log(state_dir: Path) -> list[dict[str, Any]]:
    entries = []
    for line in (state_dir / "handler.log").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def show_flow(emulator_url: str, names: dict[str, str], state_dir: Path, timeout: float) -> dict[str, str]:
    """Print each sample's attempts as they happen; return its final state."""
    finals: dict[str, str] = {}
    printed: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    while len(finals) < len(names) and time.monotonic() < deadline:
        attempts = http_json(f"{emulator_url}/v1/attempts")["attempts"]
        dead = {entry["tasklane_dead_letter"].get("task_name") for entry in handler_log(state_dir)
                if "tasklane_dead_letter" in entry}
        for label, name in names.items():
            for attempt in (a for a in attempts if a["task"] == name and a["finished"] is not None):
                if (name, attempt["attempt"]) not in printed:
                    printed.add((name, attempt["attempt"]))
                    print(f"  {label:<36} attempt {attempt['attempt']}: HTTP {attempt['status']}"
                          f"{' → will retry' if attempt['outcome'] == 'retrying' else ''}", flush=True)
                # Final only from a finished attempt's own outcome, so its line is always printed first.
                if label not in finals and attempt["outcome"] in ("succeeded", "gave_up"):
                    finals[label] = ("rejected and dead-lettered" if name.rsplit("/", 1)[1] in dead
                                     else "done" if attempt["outcome"] == "succeeded" else "dropped after retries")
        time.sleep(0.2)
    return {label: finals.get(label, "still pending") for label in names}


def local_smoke_task(queue_path: str, service_url: str, invoker: str) -> str:
    """The README's `gcloud tasks create-http-task`, aimed at the local handler (the queue by its full path,
    so no gcloud project need be set)."""
    return (f"gcloud tasks create-http-task --queue={queue_path} --url={service_url}/process-order --method=POST "
            """--body-content='{"orderId": "gcloud-1", "action": "update_inventory"}' """
            f"--header=Content-Type:application/json --oidc-service-account-email={invoker} "
            f"--oidc-token-audience={service_url}")


def run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from handler.order_actions import service_actions
    from infra.settings import settings_from_stack_files
    from tasklane.emulator.server import gcloud_environment
    from tasklane.producer import ProducerConfig, TaskProducer

    settings = settings_from_stack_files(args.stack, REPO)
    for port in (args.grpc_port, args.emulator_http_port, args.handler_port):
        if not port_free(args.host, port):
            raise LocalError(f"port {port} on {args.host} is in use; stop what uses it or pass another port "
                             "(see `python -m local --help`)")
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    queue_path, invoker = settings.local_queue_path, settings.invoker_email
    args.invoker = invoker
    print(f"▶ Console: http://{args.host}:{args.emulator_http_port}/  (state kept in {state_dir})", flush=True)
    service_url = f"http://{args.host}:{args.handler_port}"
    children: list[Any] = []
    try:
        project = queue_path.split("/")[1]
        final_failures, routed = start_final_failures_route(args, state_dir, project, service_url, children)
        print(f"▶ {routed}", flush=True)
        stores, which = start_stores(args, state_dir, project, children)
        print(f"▶ {which}", flush=True)
        emulator, ready = start_emulator(args, state_dir, stores, project, final_failures)
        children.append(emulator)
        emulator_url = f"http://{args.host}:{args.emulator_http_port}"
        print(f"▶ {ready}", flush=True)
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)  # only ours, or none
        os.environ.pop("TASKLANE_DEAD_LETTER_DIR", None)
        children.append(start_handler(args, {**stores,
            "PORT": str(args.handler_port), "HOST": args.host, "TASKLANE_QUEUE_PATH": queue_path,
            "TASKLANE_INVOKER_SERVICE_ACCOUNT": invoker, "TASKLANE_TASK_AUDIENCE": service_url,
            "TASKLANE_MAX_ATTEMPTS": str(settings.max_attempts), "TASKLANE_TOKEN_CHECK": "full",
            "TASKLANE_TRACE_EXPORTER": "log",
            "TASKLANE_PUSH_TOKEN_CHECK": "off",  # Google's Pub/Sub emulator signs no pushes
            "TASKLANE_TOKEN_ISSUERS": emulator_url, "TASKLANE_TOKEN_CERTS_URL": f"{emulator_url}/oauth2/v1/certs",
            "TASKLANE_DEMO_ACTIONS": "true"}, state_dir))
        print(f"▶ handler on {service_url} (checks the emulator's tokens in full; log: {state_dir / 'handler.log'})",
              flush=True)

        emulator_host = f"{args.host}:{args.grpc_port}"
        producer = TaskProducer(ProducerConfig(queue_path=queue_path, service_url=service_url,
                                               invoker_service_account=invoker, task_audience=service_url,
                                               emulator_host=emulator_host),
                                # Names only, so the poison sample reaches the handler unchecked.
                                actions=service_actions(demo=True).names)
        print(f"▶ enqueueing {len(SAMPLES)} sample orders into {queue_path}", flush=True)
        names = {label: producer.enqueue(action, payload).task_name for label, action, payload in SAMPLES}
        finals = show_flow(emulator_url, names, state_dir, timeout=args.sample_timeout)
        print("▶ final state of each sample:")
        for label, state in finals.items():
            print(f"  {label:<36} {state}")
        expected = {"poison: not an order, never retried": "rejected and dead-lettered"}
        gcloud_exports = "\n".join(f"  export {name}={value}"
                                   for name, value in gcloud_environment(emulator_url).items())
        ok = all(state == expected.get(label, "done") for label, state in finals.items())
        cli_env = {**stores, "CLOUD_TASKS_EMULATOR_HOST": emulator_host, "TASKLANE_QUEUE_PATH": queue_path,
                   "TASKLANE_SERVICE_URL": service_url, "TASKLANE_INVOKER_SERVICE_ACCOUNT": invoker,
                   "TASKLANE_TASK_AUDIENCE": service_url}
        ok = show_dead_letters(cli_env, names["poison: not an order, never retried"], emulator_url) and ok
        print(f"""
Ready for your own producers. In another shell:
  export CLOUD_TASKS_EMULATOR_HOST={emulator_host}
  export TASKLANE_QUEUE_PATH={queue_path}
  export TASKLANE_SERVICE_URL={service_url}
  export TASKLANE_INVOKER_SERVICE_ACCOUNT={invoker}
  export TASKLANE_TASK_AUDIENCE={service_url}
{exports(stores)}  export TASKLANE_EMULATOR_HTTP_URL={emulator_url}
  .venv/bin/tasklane enqueue update_inventory --payload '{{"orderId": "my-1"}}'
  .venv/bin/tasklane dead-letters list
gcloud talks to the same queue over the emulator's REST API:
{gcloud_exports}
  {local_smoke_task(queue_path, service_url, invoker)}
Console: {emulator_url}/   Status: .venv/bin/python -m local status   Handler log: {state_dir / 'handler.log'}""",
              flush=True)
        if args.once:
            return 0 if ok else 1
        print("Press Ctrl-C to stop everything.", flush=True)
        while True:  # until Ctrl-C (KeyboardInterrupt) or SIGTERM
            for child in children:
                if child.process.poll() is not None:
                    raise LocalError(f"the {child.name} stopped unexpectedly (exit {child.process.returncode})")
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            child.stop()


def exports(environment: dict[str, str]) -> str:
    return "".join(f"  export {name}={value}\n" for name, value in environment.items())


def producer_cli(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tasklane.producer", *args], cwd=REPO,
                          env={**os.environ, **environment}, capture_output=True, text=True, timeout=60)


def show_dead_letters(environment: dict[str, str], poison_task: str, emulator_url: str) -> bool:
    """List the dead letters with the operators' CLI, replay the poison sample's, and show the replay's answer."""
    print("▶ dead letters, as an operator sees them:\n  $ tasklane dead-letters list", flush=True)
    listed = producer_cli(environment, "dead-letters", "list", "--json")
    if listed.returncode != 0:
        print(f"  {listed.stderr.strip()}", flush=True)
        return False
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    for line in producer_cli(environment, "dead-letters", "list").stdout.splitlines():
        print(f"  {line}")
    letter = next((item for item in letters if item["taskName"] == poison_task.rsplit("/", 1)[1]), None)
    if letter is None:
        print("  the poison sample's letter is missing", flush=True)
        return False
    print(f"  $ tasklane dead-letters replay {letter['id']}", flush=True)
    replayed = producer_cli(environment, "dead-letters", "replay", letter["id"])
    print(f"  {(replayed.stdout or replayed.stderr).strip()}", flush=True)
    if replayed.returncode != 0:
        return False
    replay_task = replayed.stdout.split(" as ", 1)[1].split()[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        finished = [a for a in http_json(f"{emulator_url}/v1/attempts")["attempts"]
                    if a["task"] == replay_task and a["finished"] is not None]
        if finished:
            print(f"  replay {replay_task.rsplit('/', 1)[1]} attempt 1: HTTP {finished[0]['status']} (processed: "
                  "the body is still not an order, so it is rejected again and kept as a new letter)", flush=True)
            return True
        time.sleep(0.2)
    print("  the replay was not processed within 30 s", flush=True)
    return False
def status(argv: list[str]) -> int:
    """`python -m local status`: a running pipeline's queues, recent outcomes and dead letters."""
    parser = argparse.ArgumentParser(prog="python -m local status", description=status.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--emulator-http-port", type=int, default=8124, help="emulator HTTP port (default 8124)")
    args = parser.parse_args(argv)
    base = f"http://{args.host}:{args.emulator_http_port}"
    try:
        overview = http_json(f"{base}/console/api/overview")
    except OSError as error:
        print(f"local status: nothing answers at {base} ({getattr(error, 'reason', error)}); start it with "
              "`make local`", file=sys.stderr)
        return 2
    print(f"Console: {base}/")
    for queue in overview["queues"]:
        outcomes = ", ".join(f"{count} {outcome.replace('_', ' ')}"
                             for outcome, count in sorted(queue["outcomesLastMinute"].items())) or "none"
        print(f"{queue['id']}  {queue['state']}  depth {queue['depth']}  in flight {queue['inFlight']}  "
              f"dispatches in the last minute {queue['dispatchesLastMinute']} (limit {queue['limitPerMinute']:g})  "
              f"outcomes: {outcomes}")
    if not overview["queues"]:
        print("no queues")
    if overview.get("deadLettersUnavailable"):
        print(f"dead letters: unknown ({overview['deadLettersUnavailable']})")
    else:
        print(f"dead letters: {overview['deadLetters']} (from {overview['deadLetterSource']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:
        return status(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="whose queue settings to use (default dev)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=8123, help="emulator gRPC port (default 8123)")
    parser.add_argument("--emulator-http-port", type=int, default=8124, help="emulator HTTP port (default 8124)")
    parser.add_argument("--handler-port", type=int, default=8080, help="handler port (default 8080)")
    parser.add_argument("--state-dir", default=str(STATE_DIR), help="emulator state and handler log (.tasklane)")
    parser.add_argument("--sample-timeout", type=float, default=30.0, help="seconds to wait for the samples")
    parser.add_argument("--once", action="store_true", help="stop after the samples instead of staying up")
    parser.add_argument("--no-google-emulators", action="store_true",
                        help="do not start Google's Firestore emulator: keys in the handler, letters in files")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM stop everything cleanly. SIGINT is set explicitly: a process started from a
    # background job inherits it as ignored, and Python then installs no Ctrl-C handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"\nStopped: everything is shut down (emulators and handler); state stays in {args.state_dir}",
              flush=True)
        return 0
    except LocalError as error:
        print(f"make local: {error}", file=sys.stderr)
        return 2


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
