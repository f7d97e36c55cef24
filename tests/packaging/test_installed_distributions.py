"""The distributions as a user installs them: the built wheels in a fresh virtualenv outside the repository, used
from a temporary folder — the producer enqueueing to the installed emulator's command, the installed handler
framework running one custom action, and a throwaway pytest project using the emulator's fixture.

The wheels come from `make dist` (rebuilt only when the distributions' files change).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
UV = Path(sys.executable).parent / "uv"
PYTEST_VERSION = pytest.__version__
READY = re.compile(r"gRPC (\S+:\d+).*HTTP (http://\S+)")
QUEUE = "projects/app-project/locations/us-central1/queues/jobs"
INVOKER = "tasklane-invoker@app-project.iam.gserviceaccount.com"

pytestmark = pytest.mark.xdist_group("installed-distributions")


def built_wheels() -> dict[str, Path]:
    """`make dist`, under a lock so two test processes never build at once; the wheels by distribution name."""
    with open(REPO / ".dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "dist"], cwd=REPO, check=True, capture_output=True, timeout=300)
    wheels = {path.name.split("-")[0].replace("_", "-"): path for path in DIST.glob("*.whl")}
    assert set(wheels) == {"tasklane", "tasklane-core", "tasklane-handler", "tasklane-emulator"}, wheels
    return wheels


@dataclass
class Installed:
    """A virtualenv holding only what the wheels and their dependencies bring, and a folder to work in."""

    venv: Path
    workdir: Path

    def environment(self, **extra: str) -> dict[str, str]:
        """A user's shell: the venv first on PATH, nothing of this repository or of the test run's own venv."""
        keep = {name: value for name, value in os.environ.items()
                if name in ("HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")}
        return {**keep, "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", **extra}

    def run(self, *argv: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=self.workdir, env=self.environment(**extra), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *argv: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(argv, cwd=self.workdir, env=self.environment(**extra), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def python(self, code: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.venv / "bin" / "python"), "-c", textwrap.dedent(code), **extra)


def install(root: Path, wheels: list[Path], *extra: str) -> Installed:
    venv = root / "venv"
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    subprocess.run([str(UV), "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                    *map(str, wheels), *extra], check=True, capture_output=True, timeout=300)
    workdir = root / "work"
    workdir.mkdir()
    return Installed(venv, workdir)


@pytest.fixture(scope="session")
def wheels() -> dict[str, Path]:
    return built_wheels()


@pytest.fixture(scope="session")
def installed(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("user")
    assert REPO not in root.parents
    return install(root, list(wheels.values()), f"pytest=={PYTEST_VERSION}")


def test_each_distribution_is_installed_from_its_wheel_not_from_this_checkout(installed: Installed) -> None:
    found = installed.python("""
        import importlib.metadata, json
        import tasklane.core, tasklane.emulator, tasklane.handler, tasklane.producer
        print(json.dumps({
            "files": {m.__name__: m.__file__ for m in (tasklane.core, tasklane.emulator, tasklane.handler,
                                                       tasklane.producer)},
            "versions": {d: importlib.metadata.version(d) for d in ("tasklane", "tasklane-core", "tasklane-handler",
                                                                    "tasklane-emulator")},
            "typed": [importlib.metadata.files(d) and any(str(f).endswith("py.typed")
                      for f in importlib.metadata.files(d)) for d in ("tasklane", "tasklane-core",
                                                                      "tasklane-handler", "tasklane-emulator")],
        }))
    """)
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    for module, path in answer["files"].items():
        assert path.startswith(str(installed.venv)), (module, path)
    assert set(answer["versions"].values()) == {"0.1.0"}
    assert all(answer["typed"]), "every distribution ships py.typed"


def test_the_producer_pulls_in_neither_the_web_framework_nor_the_emulator_nor_pulumi(
        wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> None:
    alone = install(tmp_path_factory.mktemp("producer-only"), [wheels["tasklane"], wheels["tasklane-core"]])
    listed = alone.run(str(UV), "pip", "list", "--python", str(alone.venv / "bin" / "python"), "--format", "json")
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"tasklane", "tasklane-core", "google-cloud-tasks"} <= names
    assert not names & {"starlette", "uvicorn", "pulumi", "pulumi-gcp", "tasklane-emulator", "tasklane-handler",
                        "aiohttp"}, names
    help_text = alone.run(str(alone.venv / "bin" / "tasklane"), "--help")
    assert help_text.returncode == 0, help_text.stderr
    for command in ("enqueue", "enqueue-file", "list", "show", "dead-letters"):
        assert command in help_text.stdout


@pytest.fixture
def emulator(installed: Installed) -> Iterator[tuple[str, str]]:
    """The installed `tasklane-emulator` command, with one queue: its gRPC address and HTTP URL."""
    process = installed.start(str(installed.venv / "bin" / "tasklane-emulator"), "--grpc-port", "0",
                              "--http-port", "0", "--queue", QUEUE, "--log-level", "WARNING")
    assert process.stdout is not None
    line = process.stdout.readline()
    match = READY.search(line)
    assert match, line + process.stdout.read()
    yield match.group(1), match.group(2)
    process.terminate()
    process.wait(timeout=10)


CUSTOM_ACTIONS = '''
    """An application's own action, typed: the registry module stays light (no web framework imported)."""
    from dataclasses import dataclass

    from tasklane.core.task_context import TaskContext
    from tasklane.handler.actions import ActionLog, ActionRegistry, RetryableError

    actions = ActionRegistry()


    @dataclass(frozen=True)
    class Greeting:
        name: str
        times: int = 1


    @actions.register("greet")
    async def greet(greeting: Greeting, task: TaskContext, log: ActionLog) -> None:
        if greeting.name == "later" and task.retry_count == 0:
            raise RetryableError("not yet", retry_after=1)
        log.event("greeted", event="greeted", greeted=greeting.name, times=greeting.times, task_name=task.task_name)
'''

CUSTOM_SERVICE = '''
    from my_actions import actions
    from tasklane.handler.app import create_app

    app = create_app(actions=actions)
'''

ENQUEUE = '''
    import json, sys
    from tasklane.producer import ProducerConfig, TaskProducer
    from tasklane.producer.producer import InvalidTask

    config = ProducerConfig(queue_path=sys.argv[1], service_url=sys.argv[2], invoker_service_account=sys.argv[3],
                            task_audience=sys.argv[2], emulator_host=sys.argv[4], actions="my_actions:actions")
    producer = TaskProducer(config)
    refused = []
    for bad in ({"name": "ada", "tims": 2}, {"name": 7}):  # checked against Greeting before any API call
        try:
            producer.enqueue("greet", bad)
        except InvalidTask as error:
            refused.append(str(error))
    names = [producer.enqueue("greet", {"name": name, "times": 2}).task_name for name in ("ada", "later")]
    print(json.dumps({"refused": refused, "tasks": names}))
'''


def test_an_application_enqueues_to_the_installed_emulator_and_its_own_typed_action_runs_on_the_installed_framework(
        installed: Installed, emulator: tuple[str, str]) -> None:
    grpc_address, emulator_url = emulator
    (installed.workdir / "my_actions.py").write_text(textwrap.dedent(CUSTOM_ACTIONS))
    (installed.workdir / "my_service.py").write_text(textwrap.dedent(CUSTOM_SERVICE))
    (installed.workdir / "enqueue.py").write_text(textwrap.dedent(ENQUEUE))
    port = free_port()
    service_url = f"http://127.0.0.1:{port}"
    handler = installed.start(
        str(installed.venv / "bin" / "uvicorn"), "my_service:app", "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log",
        TASKLANE_TOKEN_CHECK="full", TASKLANE_TASK_AUDIENCE=service_url, TASKLANE_INVOKER_SERVICE_ACCOUNT=INVOKER,
        TASKLANE_TOKEN_ISSUERS=emulator_url, TASKLANE_TOKEN_CERTS_URL=f"{emulator_url}/oauth2/v1/certs")
    try:
        wait_for_http(f"{service_url}/", handler)
        schema = json.loads(urllib.request.urlopen(f"{service_url}/openapi.json", timeout=5).read())  # noqa: S310
        assert "/tasks/greet" in schema["paths"]
        enqueued = installed.run(str(installed.venv / "bin" / "python"), "enqueue.py", QUEUE, service_url, INVOKER,
                                 grpc_address, PYTHONPATH=str(installed.workdir))
        assert enqueued.returncode == 0, enqueued.stderr
        answer = json.loads(enqueued.stdout)
        assert "unknown field `tims`" in answer["refused"][0], answer
        assert "Expected `str`, got `int` - at `$.name`" in answer["refused"][1], answer
        ada, later = answer["tasks"]
        assert ada.startswith(f"{QUEUE}/tasks/")

        assert [a["status"] for a in wait_for_attempts(emulator_url, ada, 1)] == [200]
        assert [a["status"] for a in wait_for_attempts(emulator_url, later, 2)] == [503, 200], "retried once"
        shown = installed.run(str(installed.venv / "bin" / "tasklane"), "show", ada.rsplit("/", 1)[1],
                              CLOUD_TASKS_EMULATOR_HOST=grpc_address, TASKLANE_QUEUE_PATH=QUEUE,
                              TASKLANE_SERVICE_URL=service_url, TASKLANE_INVOKER_SERVICE_ACCOUNT=INVOKER,
                              TASKLANE_TASK_AUDIENCE=service_url, TASKLANE_EMULATOR_HTTP_URL=emulator_url)
        assert shown.returncode == 0, shown.stderr
        assert "finished" in shown.stdout, shown.stdout
    finally:
        handler.terminate()
        output, _ = handler.communicate(timeout=10)
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    greeted = {entry["task_name"]: entry for entry in entries if entry.get("event") == "greeted"}
    assert greeted[ada.rsplit("/", 1)[1]]["greeted"] == "ada" and greeted[ada.rsplit("/", 1)[1]]["times"] == 2
    assert greeted[later.rsplit("/", 1)[1]]["greeted"] == "later"


def wait_for_http(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return
        except OSError:
            if process.poll() is not None:
                raise AssertionError(process.stdout.read() if process.stdout else "it exited") from None
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.05)


def wait_for_attempts(emulator_url: str, task_name: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The task's attempts once `count` of them have finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{emulator_url}/v1/attempts?task={task_name}", timeout=5) as response:  # noqa: S310
            attempts: list[dict[str, Any]] = json.loads(response.read())["attempts"]
        if len(attempts) == count and attempts[-1]["outcome"] != "in_flight":
            return attempts
        time.sleep(0.05)
    raise AssertionError(f"{task_name}: not {count} finished attempts")


def readme_plugin_example() -> str:
    """The README's example of another project's tests using the fixture (its first Python block there)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("Its tests get a local Cloud Tasks from the emulator's pytest plugin"):]
    return section[section.index("```python\n") + 10:section.index("```\n", section.index("```python\n") + 10)]


def test_a_project_that_installs_the_emulator_gets_its_pytest_fixture_with_no_conftest(installed: Installed) -> None:
    project = installed.workdir / "throwaway-project"
    project.mkdir()
    (project / "test_with_the_fixture.py").write_text(readme_plugin_example())
    assert not list(project.glob("conftest.py"))
    result = subprocess.run([str(installed.venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                            cwd=project, env=installed.environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
