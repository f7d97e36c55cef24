"""A new user adds an action exactly as the README's "Adding an action" says, and it works end to end.

The section's code blocks are taken from README.md and run as they stand: the first registers
`refund_payment` in the service's registry, the second is the test the README tells the user to write.
Then, with nothing else changed, a task for the new action goes through the producer (which finds the
registry itself and checks the payload) into the local emulator, is delivered with a real OIDC token to
the real handler (the service's own actions, as deployed) and runs. The payments service the action calls
is a real HTTP server on loopback, told per order how to answer: 201, 503 once (a transient failure,
retried), or 409 (a permanent one, dead-lettered).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import handler.order_actions
from tasklane.handler.actions import ActionRegistry
from tasklane.producer.producer import InvalidTask
from tests.e2e.conftest import Pipeline, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Adding an action"


def readme_blocks() -> list[str]:
    """The python blocks of the README's "Adding an action" section, in order."""
    text = README.read_text()
    start = text.index(SECTION + "\n")
    end = text.index("\n### ", start + len(SECTION))
    return re.findall(r"^```python\n(.*?)^```$", text[start:end], flags=re.MULTILINE | re.DOTALL)


@dataclass
class Payments:
    """A payments service on loopback: answers each order's refunds with its scripted statuses in turn."""

    url: str = ""
    script: dict[str, list[int]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, refund: dict[str, Any]) -> int:
        with self.lock:
            self.received.append(refund)
            statuses = self.script.get(refund["orderId"], [201])
            return statuses.pop(0) if len(statuses) > 1 else statuses[0]

    def refunds_of(self, order_id: str) -> int:
        with self.lock:
            return sum(1 for refund in self.received if refund["orderId"] == order_id)


@pytest.fixture
def payments() -> Iterator[Payments]:
    service = Payments()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            refund = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = service.answer(refund) if self.path == "/refunds" else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield service
    server.shutdown()
    server.server_close()


@pytest.fixture
def readme_action(payments: Payments, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The README's first block, run as the user's module, registering into (a copy of) the service's registry."""
    monkeypatch.setattr(handler.order_actions, "actions", ActionRegistry.combined(handler.order_actions.actions))
    monkeypatch.setenv("PAYMENTS_URL", payments.url)
    module = types.ModuleType("readme_refund_payment")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(readme_blocks()[0], f"{README}: {SECTION}, block 1", "exec"), module.__dict__)  # noqa: S102
    return module


def test_the_section_has_the_action_and_its_test() -> None:
    action, test = readme_blocks()
    for needed in ("from tasklane.handler.actions import ActionLog, RejectTask, RetryableError",
                   "from handler.order_actions import actions", "raise RejectTask", "raise RetryableError",
                   "@actions.register("):
        assert needed in action, f"the README's action shows {needed!r}"
    assert "def test_" in test


def test_the_readme_registers_the_action_with_its_payload_type(readme_action: types.ModuleType) -> None:
    registered = handler.order_actions.service_actions().get("refund_payment")
    assert registered is not None
    assert registered.payload.cls is readme_action.RefundPayment
    assert registered.payload.fields == ("orderId", "amountCents", "reason")


def test_the_readmes_test_of_the_action_passes(readme_action: types.ModuleType) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_test_refund_payment"}
    exec(compile(readme_blocks()[1], f"{README}: {SECTION}, block 2", "exec"), namespace)  # noqa: S102
    tests = [value for name, value in namespace.items() if name.startswith("test_") and callable(value)]
    assert tests, "the README's second block defines a test"
    for test in tests:
        test()


def test_the_new_action_runs_end_to_end_retried_once_and_dead_lettered_when_permanent(
        readme_action: types.ModuleType, payments: Payments, make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(service_actions=True)
    producer = pipeline.producer
    assert producer.registry is not None and "refund_payment" in producer.registry.names, \
        "the producer found the service's registry, the new action in it"

    with pytest.raises(InvalidTask, match="unknown field `amountCent`; RefundPayment takes orderId"):
        producer.enqueue("refund_payment", {"orderId": "r-typo", "amountCent": 500})
    with pytest.raises(InvalidTask, match=re.escape("Expected `int` >= 1 - at `$.amountCents`")):
        producer.enqueue("refund_payment", {"orderId": "r-zero", "amountCents": 0})
    assert producer.list_tasks() == [], "refused before any API call"

    payments.script = {"r-busy": [503, 201], "r-refunded": [409]}
    producer.enqueue("refund_payment", {"orderId": "r-1", "amountCents": 500})
    producer.enqueue("refund_payment", readme_action.RefundPayment(order_id="r-busy", amount_cents=700))
    refunded = producer.enqueue("refund_payment", {"orderId": "r-refunded", "amountCents": 900}).task_name

    wait_for(lambda: "r-1" in pipeline.handled("refund_issued"), message="the refund")
    [issued] = [e for e in pipeline.log.events("refund_issued") if e["order_id"] == "r-1"]
    assert issued["amount_cents"] == 500
    assert {a["url"].rsplit("/", 2)[-2:] == ["tasks", "refund_payment"] for a in pipeline.attempts()} == {True}

    # Transient: payments answered 503, so the action raised RetryableError(retry_after=5): a retry, later.
    wait_for(lambda: payments.refunds_of("r-busy") == 1 and [a for a in pipeline.attempts() if a["status"] == 503],
             message="the failed first attempt")
    time.sleep(0.2)
    assert "r-busy" not in pipeline.handled("refund_issued")
    pipeline.clock.advance(5)
    wait_for(lambda: "r-busy" in pipeline.handled("refund_issued"), message="the retry")
    assert payments.refunds_of("r-busy") == 2

    # Permanent: payments answered 409, so RejectTask: acknowledged once, dead-lettered, never retried.
    wait_for(lambda: [letter for letter in pipeline.dead_letters()
                      if letter["task_name"] == refunded.rsplit("/", 1)[1]], message="the dead letter")
    [letter] = [letter for letter in pipeline.dead_letters() if letter["task_name"] == refunded.rsplit("/", 1)[1]]
    assert letter["kind"] == "rejected" and letter["reason"] == "refund_payment: order r-refunded is already refunded"
    assert json.loads(letter["body"]) == {"orderId": "r-refunded", "amountCents": 900}
    pipeline.clock.advance(60)
    wait_for(pipeline.queue_empty, message="the queue to empty")
    assert payments.refunds_of("r-refunded") == 1, "never retried"


def test_the_tutorials_route_carries_the_new_action_too(readme_action: types.ModuleType, payments: Payments,
                                                        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(service_actions=True)
    body = {"orderId": "r-envelope", "action": "refund_payment", "amountCents": 250, "idempotencyKey": "refund-r-e"}
    pipeline.producer.enqueue_body(json.dumps(body).encode())  # the tutorial's shape, to /process-order
    wait_for(lambda: "r-envelope" in pipeline.handled("refund_issued"), message="the refund")
    assert payments.received == [{"orderId": "r-envelope", "amountCents": 250, "reason": "customer request"}]
