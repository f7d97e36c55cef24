"""Small helpers shared by the test folders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tasklane.emulator.server import gcloud_environment


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {message}")


IN_CI = os.environ.get("CI") == "true"


class Gcloud:
    """The real gcloud binary, aimed at an emulator's REST surface with the environment the README gives,
    in a configuration directory of its own, with nothing reaching the network (no prompts, update checks
    or usage reports). Skips the test where gcloud is not installed, except under CI, which has it."""

    def __init__(self, http_url: str, config_dir: Path, project: str) -> None:
        binary = shutil.which("gcloud")
        if binary is None:
            if IN_CI:
                pytest.fail("gcloud is missing: CI must run the gcloud tests")
            pytest.skip("gcloud is not installed (https://cloud.google.com/sdk/docs/install)")
        self.binary = binary
        self.environment = {**os.environ, **gcloud_environment(http_url), "CLOUDSDK_CONFIG": str(config_dir),
                            "CLOUDSDK_CORE_PROJECT": project, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
                            "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
                            "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
                            "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false"}

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *arguments], env=self.environment, capture_output=True, text=True,
                              timeout=60)

    def __call__(self, *arguments: str) -> str:
        """Run a command that must succeed; its standard output."""
        result = self.run(*arguments)
        assert result.returncode == 0, f"gcloud {' '.join(arguments)}: {result.stderr}"
        return result.stdout

    def json(self, *arguments: str) -> Any:
        return json.loads(self(*arguments, "--format=json"))
