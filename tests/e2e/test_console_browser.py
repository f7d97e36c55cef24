"""The console in a real browser (Debian's chromium, driven by Playwright), walked as a user would: the local
pipeline started, tasks enqueued (one transient, one poison), the transient one opened with both attempts,
the queue paused and resumed, the dead letter replayed and its replay seen processed.

Screenshots of each view are saved under test-artifacts/console/ (ignored by git). `make test` installs
chromium where it can; without it the test is skipped, except under CI, which must run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import settings_from_stack_files
from tests.helpers import IN_CI, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SETTINGS = settings_from_stack_files("dev", REPO)
QUEUE = SETTINGS.local_queue_path


def chromium_or_skip() -> None:
    if shutil.which("chromium") is None or not os.path.exists(CHROMIUM):
        reason = "chromium is not installed (Debian: apt-get install chromium; `make test` installs it)"
        if IN_CI:
            pytest.fail(f"{reason}: CI must run the console's browser test")
        pytest.skip(reason)


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


class LocalPipeline:
    """`python -m local` on free loopback ports with its own state directory, until stopped with Ctrl-C."""

    def __init__(self, state_dir: Path) -> None:
        self.ports = [free_port(), free_port(), free_port()]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local", "--grpc-port", str(self.ports[0]), "--emulator-http-port",
             str(self.ports[1]), "--handler-port", str(self.ports[2]), "--state-dir", str(state_dir)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            self.output.append(line)
            if "Press Ctrl-C" in line or not line:
                break
        assert "Press Ctrl-C" in "".join(self.output), "".join(self.output)
        self.console = f"http://127.0.0.1:{self.ports[1]}"
        self.emulator_host = f"127.0.0.1:{self.ports[0]}"
        self.service_url = f"http://127.0.0.1:{self.ports[2]}"

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=30)
        return "".join(self.output) + rest


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[LocalPipeline]:
    chromium_or_skip()
    running = LocalPipeline(tmp_path / "state")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def test_a_user_walks_the_console_through_the_local_pipeline(pipeline: LocalPipeline, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    from handler.order_actions import service_actions
    from tasklane.producer import ProducerConfig, TaskProducer

    first_line = pipeline.output[0]
    assert first_line.startswith(f"▶ Console: {pipeline.console}/"), "make local prints the console first"
    invoker = SETTINGS.invoker_email
    producer = TaskProducer(ProducerConfig(queue_path=QUEUE, service_url=pipeline.service_url,
                                           invoker_service_account=invoker, task_audience=pipeline.service_url,
                                           emulator_host=pipeline.emulator_host),
                            actions=service_actions(demo=True).names)  # names only: the poison goes unchecked
    transient = producer.enqueue("reserve_stock", {"orderId": "browser-1"}).task_name
    poison = producer.enqueue("update_inventory", {"sku": "SKU-browser"}).task_name
    later = [producer.enqueue("update_inventory", {"orderId": f"later-{n}"}, delay=3600).task_name for n in range(3)]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        page = browser.new_page()
        page.set_default_timeout(10_000)
        page.on("dialog", lambda dialog: dialog.accept())
        try:
            # 3. The queue and its waiting tasks; the transient task with both attempts.
            page.goto(f"{pipeline.console}/")
            row = page.locator(f'tr[data-queue="{QUEUE}"]')
            expect(row).to_contain_text("running")
            expect(row.locator(".depth")).to_have_text("3")
            page.screenshot(path=str(ARTIFACTS / "1-queues.png"), full_page=True)
            row.locator("a").first.click()
            for name in later:
                expect(page.locator(f'tr[data-task="{name}"]')).to_be_visible()
            page.fill("#search", later[1].rsplit("/", 1)[1][:12])
            expect(page.locator("#tasks tbody tr")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "2-tasks.png"), full_page=True)

            wait_for(lambda: [a for a in http_json(f"{pipeline.console}/v1/attempts?task={transient}")["attempts"]
                              if a["outcome"] == "succeeded"], timeout=20, message="the transient task's retry")
            page.goto(f"{pipeline.console}/#/task/{transient}")
            expect(page.locator("#task-status")).to_have_text(re.compile(r"finished: succeeded"))
            attempts = page.locator(".attempt")
            expect(attempts).to_have_count(2)
            expect(attempts.nth(0)).to_contain_text("HTTP 503")
            expect(attempts.nth(0)).to_contain_text("retrying")
            expect(attempts.nth(1)).to_contain_text("HTTP 200")
            expect(attempts.nth(1)).to_contain_text("succeeded")
            expect(attempts.nth(0).locator(".claims")).to_contain_text(invoker)
            expect(page.locator("pre.body-json")).to_contain_text('"orderId": "browser-1"')
            assert "eyJ" not in page.content(), "the raw token is never on the page"
            page.screenshot(path=str(ARTIFACTS / "3-task.png"), full_page=True)

            # 4. Pause and resume the queue, seen on the page and in the engine.
            page.goto(f"{pipeline.console}/")
            row = page.locator(f'tr[data-queue="{QUEUE}"]')
            row.get_by_role("button", name="Pause").click()
            expect(page.locator("#flash")).to_contain_text("paused")
            expect(row).to_contain_text("paused")
            assert http_json(f"{pipeline.console}/console/api/overview")["queues"][0]["state"] == "paused"
            page.screenshot(path=str(ARTIFACTS / "4-paused.png"), full_page=True)
            row.get_by_role("button", name="Resume").click()
            expect(row).to_contain_text("running")

            # 5. Replay the poison task's dead letter and see the replay processed.
            page.goto(f"{pipeline.console}/#/dead-letters")
            poison_id = poison.rsplit("/", 1)[1]
            letter = page.locator(".letter", has_text=poison_id)
            expect(letter).to_have_count(1)
            expect(letter).to_contain_text("rejected")
            expect(letter.locator("pre")).to_contain_text('"sku": "SKU-browser"')
            if "▶ Firestore emulator on" in "".join(pipeline.output):  # read from the store, as the CLI reads it
                expect(page.locator("#content")).to_contain_text("From the Firestore database tasklane-local")
            letter.get_by_role("button", name="Replay").click()
            expect(page.locator("#flash")).to_contain_text("replayed")
            replay_link = letter.locator(".replays a")
            expect(replay_link).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "5-dead-letters.png"), full_page=True)
            replay_link.click()
            expect(page.locator("#task-status")).to_have_text(re.compile(r"finished: succeeded \(HTTP 200\)"),
                                                              timeout=15_000)
            expect(page.locator(".attempt")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "6-replayed-task.png"), full_page=True)
        finally:
            browser.close()

    output = pipeline.stop()
    assert pipeline.process.returncode == 0
    assert output.rstrip().splitlines()[-1].startswith("Stopped: everything is shut down"), output[-400:]
