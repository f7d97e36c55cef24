"""The producer with typed actions: where it finds the registry, what it checks before any API call, and the
route, body and key of what it creates; a replay of a typed task gets a fresh key."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handler.orders import OrderRequest
from tasklane.core.dead_letter import DeadLetter
from tasklane.core.dead_letter_store import FileDeadLetterStore
from tasklane.core.task_context import TaskContext
from tasklane.core.wire import IDEMPOTENCY_KEY_HEADER
from tasklane.emulator.testing import RunningEmulator
from tasklane.producer import ProducerConfig, TaskProducer, TaskSpec
from tasklane.producer.config import ConfigError
from tasklane.producer.producer import InvalidTask
from tests.producer.test_producer import OUTPUTS, QUEUE, REPO, NoCallsClient

USER_ACTIONS = '''
import dataclasses

from tasklane.handler.actions import ActionLog, ActionRegistry
from tasklane.core.task_context import TaskContext

registry = ActionRegistry()


@dataclasses.dataclass
class Invoice:
    invoice_id: str
    total_cents: int


@registry.register("send_invoice")
async def send_invoice(invoice: Invoice, task: TaskContext, log: ActionLog) -> None:
    log.event("invoice sent", invoice_id=invoice.invoice_id)
'''


@pytest.fixture
def user_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An application's own actions module, `billing_actions:registry`, on the import path."""
    (tmp_path / "billing_actions.py").write_text(USER_ACTIONS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def offline(config: ProducerConfig, **kwargs: Any) -> TaskProducer:
    return TaskProducer(config, client=NoCallsClient(), **kwargs)  # type: ignore[arg-type]


def test_the_registry_named_in_the_configuration_is_the_one_payloads_are_checked_against(user_actions: Path) -> None:
    config = ProducerConfig.from_stack_outputs(OUTPUTS, {"TASKLANE_ACTIONS": "billing_actions:registry"})
    assert config.actions == "billing_actions:registry"
    producer = offline(config)
    assert producer.registry is not None
    assert producer.registry.names == ("send_invoice", "verify_delivery"), "plus the check `make verify` sends"
    task = producer.build_task(TaskSpec("send_invoice", {"invoice_id": "i-1", "total_cents": 1200}))
    assert task["http_request"]["url"] == OUTPUTS["service_url"] + "/tasks/send_invoice"
    assert json.loads(task["http_request"]["body"]) == {"invoice_id": "i-1", "total_cents": 1200}
    with pytest.raises(InvalidTask, match="send_invoice: invalid Invoice: unknown field `total`; Invoice takes "
                                          "invoice_id \\(required\\), total_cents \\(required\\)"):
        producer.build_task(TaskSpec("send_invoice", {"invoice_id": "i-1", "total": 1200}))
    with pytest.raises(InvalidTask, match="unknown action 'update_inventory'; known actions: send_invoice, "
                                          "verify_delivery"):
        producer.build_task(TaskSpec("update_inventory", {"orderId": "o"}))


@pytest.mark.parametrize("path, message", [
    ("billing_actions", "must be an import path like 'myapp.actions:registry'"),
    ("no_such_module_here:registry", "cannot import the actions module 'no_such_module_here'"),
    ("billing_actions:nothing", "module 'billing_actions' has no 'nothing'"),
    ("os:sep", "actions 'os:sep' is a str, not an ActionRegistry"),
])
def test_a_registry_path_that_leads_nowhere_is_a_configuration_error(user_actions: Path, path: str,
                                                                     message: str) -> None:
    config = ProducerConfig.from_stack_outputs(OUTPUTS, {"TASKLANE_ACTIONS": path})
    with pytest.raises(ConfigError, match=message):
        offline(config)


def test_a_payload_may_be_an_instance_of_the_actions_type_and_is_checked_all_the_same() -> None:
    producer = offline(ProducerConfig.from_stack_outputs(OUTPUTS, {}))
    task = producer.build_task(TaskSpec("send_confirmation", OrderRequest("o-1", "ada@example.com")))
    assert json.loads(task["http_request"]["body"]) == {"orderId": "o-1", "customerEmail": "ada@example.com"}
    with pytest.raises(InvalidTask, match="send_confirmation: invalid OrderRequest: Expected `str` of length >= 1"):
        producer.build_task(TaskSpec("send_confirmation", OrderRequest("")))  # Structs do not check on creation
    with pytest.raises(InvalidTask, match="payload must be a mapping or an instance of OrderRequest, got "
                                          "TaskContext"):
        producer.build_task(TaskSpec("send_confirmation", TaskContext()))


def test_given_only_names_the_producer_checks_the_name_and_leaves_the_payload_to_the_handler() -> None:
    producer = offline(ProducerConfig.from_stack_outputs(OUTPUTS, {}), actions=["update_inventory"])
    assert producer.registry is None
    task = producer.build_task(TaskSpec("update_inventory", {"sku": "S-1"}))
    assert json.loads(task["http_request"]["body"]) == {"sku": "S-1"}
    with pytest.raises(InvalidTask, match="unknown action 'refund'; known actions: update_inventory, "
                                          "verify_delivery"):
        producer.build_task(TaskSpec("refund", {}))


def test_a_tasks_own_idempotency_key_travels_in_its_header(cloud_tasks_emulator: RunningEmulator) -> None:
    client = cloud_tasks_emulator.client()
    client.create_queue(parent=QUEUE.rsplit("/queues/", 1)[0], queue={"name": QUEUE})
    client.pause_queue(name=QUEUE)
    producer = TaskProducer(ProducerConfig.from_stack_outputs(
        OUTPUTS, {"CLOUD_TASKS_EMULATOR_HOST": cloud_tasks_emulator.host}))
    name = producer.enqueue("update_inventory", {"orderId": "o-k"}, idempotency_key="inventory-o-k").task_name
    assert producer.get_task(name).http_request.headers[IDEMPOTENCY_KEY_HEADER] == "inventory-o-k"
    untouched = producer.enqueue("update_inventory", {"orderId": "o-n"}).task_name
    assert IDEMPOTENCY_KEY_HEADER not in producer.get_task(untouched).http_request.headers


def test_the_cli_takes_the_registry_from_actions_and_refuses_a_bad_payload_before_any_call(
        user_actions: Path, cloud_tasks_emulator: RunningEmulator) -> None:
    env = {**os.environ, "PYTHONPATH": f"{user_actions}{os.pathsep}{REPO}",
           "CLOUD_TASKS_EMULATOR_HOST": cloud_tasks_emulator.host, "TASKLANE_QUEUE_PATH": QUEUE,
           "TASKLANE_SERVICE_URL": OUTPUTS["service_url"],
           "TASKLANE_INVOKER_SERVICE_ACCOUNT": OUTPUTS["invoker_service_account"],
           "TASKLANE_TASK_AUDIENCE": OUTPUTS["task_audience"]}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tasklane.producer", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)

    typo = cli("--actions", "billing_actions:registry", "enqueue", "send_invoice", "--payload",
               '{"invoice_id": "i-1", "totalCents": 5}')
    assert typo.returncode == 2 and typo.stdout == ""
    assert typo.stderr == ("producer: send_invoice: invalid Invoice: unknown field `totalCents`; Invoice takes "
                           "invoice_id (required), total_cents (required)\n")
    bad_path = cli("--actions", "os:sep", "enqueue", "send_invoice")
    assert (bad_path.returncode, bad_path.stderr) == (2, "producer: actions 'os:sep' is a str, not an "
                                                         "ActionRegistry\n")


def test_a_replayed_typed_task_keeps_its_route_and_gets_a_fresh_header_key(
        cloud_tasks_emulator: RunningEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasklane.producer.__main__ import main

    client = cloud_tasks_emulator.client()
    client.create_queue(parent=QUEUE.rsplit("/queues/", 1)[0], queue={"name": QUEUE})
    client.pause_queue(name=QUEUE)
    body = b'{"orderId":"o-r"}'
    letter = DeadLetter.capture("final_attempt_failed", "update_inventory failed transiently: down",
                                TaskContext(queue_name="orders", task_name="t-r", retry_count=4), "POST",
                                "/tasks/update_inventory", {"Content-Type": "application/json",
                                                            IDEMPOTENCY_KEY_HEADER: "inventory-o-r",
                                                            "Authorization": "Bearer x"}, body)
    letter_id = asyncio.run(FileDeadLetterStore(tmp_path).put(letter))
    for name, value in {"CLOUD_TASKS_EMULATOR_HOST": cloud_tasks_emulator.host, "TASKLANE_QUEUE_PATH": QUEUE,
                        "TASKLANE_SERVICE_URL": OUTPUTS["service_url"],
                        "TASKLANE_INVOKER_SERVICE_ACCOUNT": OUTPUTS["invoker_service_account"],
                        "TASKLANE_TASK_AUDIENCE": OUTPUTS["task_audience"]}.items():
        monkeypatch.setenv(name, value)

    assert main(["dead-letters", "--dir", str(tmp_path), "replay", letter_id]) == 0
    printed = capsys.readouterr().out
    assert "(idempotencyKey inventory-o-r~replay-" in printed
    [listed] = client.list_tasks(parent=QUEUE)
    request = client.get_task(request={"name": listed.name, "response_view": "FULL"}).http_request
    assert request.url == OUTPUTS["service_url"] + "/tasks/update_inventory" and request.body == body
    assert request.headers[IDEMPOTENCY_KEY_HEADER].startswith("inventory-o-r~replay-")
    assert "Authorization" not in request.headers


def test_without_a_registry_any_well_formed_name_goes_to_its_route_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer installed without the service (its default registry absent) still creates tasks."""
    from tasklane.producer import registry

    monkeypatch.setattr(registry, "DEFAULT_ACTIONS", "tasklane_no_such_service.actions:registry")
    bare = offline(ProducerConfig.from_stack_outputs(OUTPUTS, {}))
    assert bare.registry is None and bare.action_names is None
    task = bare.build_task(TaskSpec("anything-at-all_2", {"free": "form"}))
    assert task["http_request"]["url"] == OUTPUTS["service_url"] + "/tasks/anything-at-all_2"
    assert json.loads(task["http_request"]["body"]) == {"free": "form"}
    for name in ("has space", "a/b", "", "x" * 101):
        with pytest.raises(InvalidTask, match="must be 1-100 letters, digits, '_' or '-'"):
            bare.build_task(TaskSpec(name, {}))
    with pytest.raises(InvalidTask, match="payload must be a mapping"):
        bare.build_task(TaskSpec("anything", ["not", "a", "mapping"]))
