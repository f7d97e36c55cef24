"""The local twin of the README's cloud recipe: the `gcloud tasks create-http-task` that `make local` prints,
run with the real gcloud against the emulator, reaches the handler, which checks its token in full and
processes the order."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from local.__main__ import local_smoke_task
from tests.e2e.conftest import INVOKER, QUEUE, Pipeline, wait_for
from tests.helpers import Gcloud


def test_the_printed_gcloud_smoke_task_is_processed_by_the_local_handler(make_pipeline: Callable[..., Pipeline],
                                                                          tmp_path: Path) -> None:
    pipeline = make_pipeline()
    gcloud = Gcloud(pipeline.emulator.http_url, tmp_path, project="unset-the-queue-path-names-it")
    command = shlex.split(local_smoke_task(QUEUE, pipeline.handler_url, INVOKER))
    assert command[0] == "gcloud"
    gcloud(*command[1:])
    wait_for(lambda: pipeline.handled("inventory_updated"), message="the handler to process the gcloud task")
    assert pipeline.handled("inventory_updated") == ["gcloud-1"]
    [attempt] = pipeline.attempts()
    assert (attempt["status"], attempt["outcome"]) == (200, "succeeded")
