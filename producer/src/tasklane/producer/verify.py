"""`make verify STACK=…`: after a deploy, one smoke task through the stack's queue to its handler.

The task is created through the producer from the stack's outputs, exactly as an application creates
one, and carries the handler's built-in `verify_delivery` action. The check passes once the handler has
logged that it processed this very task; until then it reports what Cloud Tasks says about the task's
last attempt, and after `timeout` seconds (about 10 minutes: a new IAM grant can take 7 or more to reach
Cloud Run) it fails with what to check for the status seen.

Run it as `python -m tasklane.producer.verify --stack dev` (or `--outputs FILE`, or with the TASKLANE_* variables).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import google.auth.exceptions
from google.api_core import exceptions as api_exceptions

from tasklane.core.verification import VERIFIED_EVENT, VERIFY_ACTION
from tasklane.producer.config import ConfigError, ProducerConfig
from tasklane.producer.producer import ProducerError, TaskProducer

DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_POLL_SECONDS = 5.0

# What to check for the HTTP status of the smoke task's last attempt.
HINTS: dict[int, str] = {
    401: "Cloud Run refused the task's OIDC token: check that the task audience (stack output task_audience) is "
         "the service URL or one of its custom audiences, and that the handler's tokenCheck accepts it",
    403: "Cloud Run refused the invoker: right after a first deploy this is IAM propagation (up to 7 minutes or "
         "more; keep waiting); later, check that the invoker account holds roles/run.invoker on the service and "
         "that the Cloud Tasks service agent holds roles/cloudtasks.serviceAgent (to mint tokens)",
    404: "nothing answers at the task's URL: check the service_url output and the handler's route",
    429: "Cloud Run had no instance free: check maxInstances and containerConcurrency",
    500: "the handler failed: read its logs (severity>=ERROR) for the exception",
    503: "the handler or Cloud Run was unavailable: read the handler's logs; a revision that fails to start "
         "answers 503",
    504: "the handler did not answer within the request timeout",
}
NO_ATTEMPT_HINT = ("Cloud Tasks has not dispatched the task: check that the queue is RUNNING "
                   "(`gcloud tasks queues describe`) and its rate limits")
GONE_HINT = (f"the task left the queue but the handler logged no `{VERIFIED_EVENT}` for it: it was dead-lettered "
             "(search the handler's logs for the task name) or deleted by someone")


class DeliveryEvidence(Protocol):
    """Whether the handler has logged `delivery_verified` for the smoke task `order_id`."""

    def delivered(self, order_id: str) -> bool: ...


class VerificationFailed(RuntimeError):
    pass


@dataclass
class LastAttempt:
    status: int | None
    """HTTP status of the last attempt, None before the first one."""
    dispatches: int


def last_attempt(task: Any) -> LastAttempt:
    """What Cloud Tasks (FULL view) says about a task's most recent attempt."""
    attempt = task.last_attempt
    # An attempt in flight has a dispatch time but no response time yet (and an empty status).
    answered = attempt is not None and attempt.response_time is not None and attempt.response_time.timestamp() > 0
    status = None
    if answered:
        status = _http_status(attempt.response_status.code, attempt.response_status.message)
    return LastAttempt(status=status, dispatches=int(task.dispatch_count))


def _http_status(code: int, message: str) -> int | None:
    """The HTTP status Cloud Tasks recorded: named in its message, else the gRPC code's usual status."""
    named = re.search(r"\b([1-5]\d\d)\b", message)
    if named:
        return int(named.group(1))
    return {0: 200, 3: 400, 16: 401, 7: 403, 5: 404, 10: 409, 8: 429, 13: 500, 2: 500, 14: 503, 4: 504}.get(code)


class DeliveryCheck:
    def __init__(self, producer: TaskProducer, evidence: DeliveryEvidence, *,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, poll: float = DEFAULT_POLL_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 report: Callable[[str], None] = print) -> None:
        self.producer, self.evidence = producer, evidence
        self.timeout, self.poll = timeout, poll
        self._monotonic, self._sleep, self._report = monotonic, sleep, report

    def run(self) -> str:
        """Create the smoke task and wait until the handler has processed it; return the task's name."""
        order_id = f"verify-{uuid.uuid4().hex[:12]}"
        task_name = self.producer.enqueue(VERIFY_ACTION, {"orderId": order_id}).task_name
        self._report(f"smoke task {task_name} created; waiting up to {self.timeout:.0f}s for the handler")
        started = self._monotonic()
        seen: LastAttempt | None = None
        gone = False
        while True:
            if not gone:
                try:
                    attempt = last_attempt(self.producer.get_task(task_name))
                except api_exceptions.NotFound:
                    gone = True  # acknowledged; the handler's log entry may still be on its way
                else:
                    if attempt != seen and attempt.status is not None:
                        hint = HINTS.get(attempt.status, "")
                        self._report(f"  attempt {attempt.dispatches}: HTTP {attempt.status}"
                                     + (f" ({hint})" if hint else ""))
                    seen = attempt
            if self.evidence.delivered(order_id):
                self._report(f"✓ the handler processed {task_name} after {self._monotonic() - started:.0f}s")
                return task_name
            if self._monotonic() - started >= self.timeout:
                raise VerificationFailed(self._failure(task_name, seen, gone))
            self._sleep(self.poll)

    def _failure(self, task_name: str, seen: LastAttempt | None, gone: bool) -> str:
        if gone:
            why = GONE_HINT
        elif seen is None or seen.status is None:
            why = NO_ATTEMPT_HINT
        else:
            why = f"its last attempt got HTTP {seen.status}: " + HINTS.get(
                seen.status, "read the handler's logs for the task name")
        return (f"the smoke task {task_name} was not processed within {self.timeout:.0f}s; {why}. "
                "The task is left in the queue, so Cloud Tasks keeps retrying it.")


class CloudLoggingEvidence:
    """The handler's entries in Cloud Logging: Cloud Run turns each JSON line it writes into `jsonPayload`."""

    def __init__(self, project: str, client: Any) -> None:
        self.project = project
        self._client = client

    @classmethod
    def connect(cls, project: str) -> CloudLoggingEvidence:
        """With Application Default Credentials; raises DefaultCredentialsError at once when there are none."""
        from google.cloud import logging as cloud_logging

        return cls(project, cloud_logging.Client(project=project))  # type: ignore[no-untyped-call]

    def filter_for(self, order_id: str) -> str:
        # The order ID is random per run, so it alone picks out this run's entry.
        return (f'resource.type="cloud_run_revision" AND jsonPayload.event="{VERIFIED_EVENT}" '
                f'AND jsonPayload.order_id="{order_id}"')

    def delivered(self, order_id: str) -> bool:
        entries = self._client.list_entries(resource_names=[f"projects/{self.project}"],
                                            filter_=self.filter_for(order_id), page_size=1)
        return next(iter(entries), None) is not None


def _config(args: argparse.Namespace) -> ProducerConfig:
    if args.outputs:
        return ProducerConfig.from_outputs_file(Path(args.outputs))
    if args.stack:
        return ProducerConfig.from_pulumi_stack(args.stack)
    return ProducerConfig.from_environment()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasklane.producer.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", help="read the outputs of this Pulumi stack (`pulumi stack output --json`)")
    parser.add_argument("--outputs", help="read the stack's outputs from this JSON file instead")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds to wait")
    args = parser.parse_args(argv)
    if not 0 < args.timeout <= 3600:
        parser.error(f"--timeout {args.timeout:g}: must be more than 0 and at most 3600 seconds")
    try:
        config = _config(args)
        project = config.queue_path.split("/")[1]
        # Credentials first: a smoke task nobody can confirm is not worth creating.
        evidence = CloudLoggingEvidence.connect(project)
        DeliveryCheck(TaskProducer(config), evidence, timeout=args.timeout).run()
    except (ConfigError, ProducerError, VerificationFailed) as error:
        print(f"verify: {error}", file=sys.stderr)
        return 1
    except google.auth.exceptions.DefaultCredentialsError:
        print("verify: no Google credentials to read the handler's logs with: run `gcloud auth "
              "application-default login` (in CI, the google-github-actions/auth step provides them)", file=sys.stderr)
        return 1
    except api_exceptions.GoogleAPICallError as error:
        print(f"verify: Google refused a call: {error.message}. The identity running this needs "
              "roles/cloudtasks.enqueuer and roles/cloudtasks.viewer on the queue, Service Account User on the "
              "invoker account, and roles/logging.viewer.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
