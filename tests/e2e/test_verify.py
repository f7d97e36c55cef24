"""`make verify`: a smoke task through the queue to the handler, on the local pipeline with full token checks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasklane.core.verification import VERIFIED_EVENT
from tasklane.producer.verify import CloudLoggingEvidence, DeliveryCheck, VerificationFailed
from tests.e2e.conftest import Pipeline

REPO = Path(__file__).resolve().parents[2]


class HandlerLogEvidence:
    """The handler's own structured log lines: what Cloud Run forwards to Cloud Logging as jsonPayload."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def delivered(self, order_id: str) -> bool:
        return order_id in self.pipeline.handled(VERIFIED_EVENT)


def test_a_deployed_pipeline_passes_once_the_handler_has_processed_the_smoke_task(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    lines: list[str] = []
    task_name = DeliveryCheck(pipeline.producer, HandlerLogEvidence(pipeline), timeout=30, poll=0.05,
                              report=lines.append).run()
    assert task_name.startswith(pipeline.producer.config.queue_path + "/tasks/")
    assert lines[-1].startswith(f"✓ the handler processed {task_name}")
    [entry] = pipeline.log.events(VERIFIED_EVENT)
    assert entry["order_id"].startswith("verify-")
    assert entry["logging.googleapis.com/labels"]["task_name"] == task_name.rsplit("/", 1)[1]


def test_a_refused_token_fails_the_check_naming_the_status_and_what_to_check(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(audience="https://not-the-handler.example.com")
    lines: list[str] = []
    with pytest.raises(VerificationFailed) as failure:
        DeliveryCheck(pipeline.producer, HandlerLogEvidence(pipeline), timeout=2, poll=0.05,
                      report=lines.append).run()
    message = str(failure.value)
    assert "was not processed within 2s" in message
    assert "its last attempt got HTTP 401" in message and "task audience" in message
    assert "Cloud Tasks keeps retrying it" in message
    assert any(line.startswith("  attempt 1: HTTP 401") for line in lines)


def test_a_task_acknowledged_without_the_handlers_entry_is_reported_as_dead_lettered(
        make_pipeline: Callable[..., Pipeline]) -> None:
    """Cloud Tasks deletes a task on any 2xx, including a poison task the handler dead-letters: only the
    handler's own entry proves the smoke task was processed."""

    class NeverLogged:
        def delivered(self, order_id: str) -> bool:
            return False

    pipeline = make_pipeline()
    with pytest.raises(VerificationFailed, match="left the queue but the handler logged no `delivery_verified`"):
        DeliveryCheck(pipeline.producer, NeverLogged(), timeout=2, poll=0.05, report=lambda line: None).run()


def test_cloud_logging_is_asked_for_this_runs_entry_only() -> None:
    calls: list[dict[str, Any]] = []

    class RecordingClient:
        def list_entries(self, **kwargs: Any) -> list[object]:
            calls.append(kwargs)
            return [object()] if len(calls) > 1 else []

    evidence = CloudLoggingEvidence("my-tasklane-dev", RecordingClient())
    assert evidence.delivered("verify-0123456789ab") is False
    assert evidence.delivered("verify-0123456789ab") is True
    assert calls[0] == {"resource_names": ["projects/my-tasklane-dev"], "page_size": 1, "filter_": (
        'resource.type="cloud_run_revision" AND jsonPayload.event="delivery_verified" '
        'AND jsonPayload.order_id="verify-0123456789ab"')}


def run_verify(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "tasklane.producer.verify", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def test_the_command_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    missing = run_verify("--outputs", str(tmp_path / "none.json"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("verify: cannot read stack outputs from") and "Traceback" not in missing.stderr
    (tmp_path / "outputs.json").write_text(json.dumps({"queue_path": "projects/p/locations/l/queues/q"}))
    partial = run_verify("--outputs", str(tmp_path / "outputs.json"))
    assert partial.returncode == 1 and "stack outputs lack service_url" in partial.stderr
    assert run_verify("--timeout", "0").returncode == 2
    usage = subprocess.run(["make", "-s", "verify"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "usage: make verify STACK=dev" in usage.stdout


def test_without_google_credentials_the_command_says_so_before_creating_anything(
        make_pipeline: Callable[..., Pipeline], tmp_path: Path) -> None:
    """From saved outputs, as CI hands them over. Confirming needs the handler's entries in Cloud Logging, so
    without credentials to read them it stops at once, in one line, and leaves no smoke task behind."""
    pipeline = make_pipeline()
    config = pipeline.producer.config
    outputs = {"queue_path": config.queue_path, "service_url": config.service_url, "task_audience":
               config.task_audience, "invoker_service_account": config.invoker_service_account}
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    result = run_verify("--outputs", str(tmp_path / "outputs.json"), "--timeout", "3",
                        CLOUD_TASKS_EMULATOR_HOST=pipeline.emulator.grpc_target,
                        GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "no-credentials.json"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("verify: no Google credentials to read the handler's logs with")
    assert "Traceback" not in result.stderr
    assert pipeline.producer.list_tasks() == [] and pipeline.attempts() == []
