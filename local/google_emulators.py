"""Google's own emulators (Firestore, Pub/Sub) as child processes: started on a free loopback port, waited
for until they answer, and stopped with everything they spawned.

`gcloud emulators firestore start` runs a Python wrapper, which runs a shell script, which runs Java;
stopping only the first would leave Java holding the port. Each emulator therefore gets its own process
group (session), and `stop` signals the whole group: SIGTERM, then SIGKILL after a grace period.

    with GoogleEmulator.firestore() as firestore:      # or GoogleEmulator.pubsub()
        os.environ.update(firestore.environment())     # FIRESTORE_EMULATOR_HOST=127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0


class EmulatorUnavailable(RuntimeError):
    """The emulator cannot run on this machine (no gcloud, no component, no Java); the message says why."""


class EmulatorFailed(RuntimeError):
    """The emulator was there but did not start; the message holds the end of its output."""


@dataclass(frozen=True)
class EmulatorKind:
    name: str
    command: tuple[str, ...]
    """The gcloud command, without --host-port."""
    environment_variable: str
    """What client libraries read to find it."""
    component_dir: str
    """The emulator's folder under the SDK's platform/ (to tell a missing component from a failing one)."""


FIRESTORE = EmulatorKind("Firestore emulator", ("emulators", "firestore", "start"), "FIRESTORE_EMULATOR_HOST",
                         "cloud-firestore-emulator")
PUBSUB = EmulatorKind("Pub/Sub emulator", ("beta", "emulators", "pubsub", "start"), "PUBSUB_EMULATOR_HOST",
                      "pubsub-emulator")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def why_unavailable(kind: EmulatorKind) -> str | None:
    """None when `kind` can be started here, else the reason it cannot."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return f"the {kind.name} needs the gcloud CLI, which is not on PATH"
    if shutil.which("java") is None:
        return f"the {kind.name} needs Java (17 or later), which is not on PATH"
    sdk = Path(os.path.realpath(gcloud)).parent.parent
    if (sdk / "platform").is_dir() and not (sdk / "platform" / kind.component_dir).is_dir():
        return (f"the {kind.name} is not installed: `gcloud components install {kind.component_dir}` "
                f"(or apt-get install google-cloud-cli-{kind.component_dir})")
    return None


class GoogleEmulator:
    def __init__(self, kind: EmulatorKind, host: str = "127.0.0.1", port: int | None = None,
                 log_path: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def firestore(cls, **kwargs: object) -> GoogleEmulator:
        return cls(FIRESTORE, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def pubsub(cls, **kwargs: object) -> GoogleEmulator:
        return cls(PUBSUB, **kwargs)  # type: ignore[arg-type]

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """What to export for client libraries to use this emulator."""
        return {self.kind.environment_variable: self.host_port}

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> GoogleEmulator:
        reason = why_unavailable(self.kind)
        if reason is not None:
            raise EmulatorUnavailable(reason)
        if self.log_path is not None:
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - held until stop()
        else:
            import tempfile

            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - held until stop()
        command = ["gcloud", *self.kind.command, f"--host-port={self.host_port}", "--quiet", *self.extra_args]
        # Its own session: a terminal's Ctrl-C does not reach it, and stop() can signal all of its processes.
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.output_tail()
                self.stop()
                raise EmulatorFailed(f"the {self.kind.name} exited with status {self.process.returncode}: {output}")
            if self._answers():
                return self
            time.sleep(0.1)
        output = self.output_tail()
        self.stop()
        raise EmulatorFailed(f"the {self.kind.name} did not answer on {self.host_port} within {timeout:g} s: {output}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host_port}/", timeout=1) as response:  # noqa: S310 - loopback
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def output_tail(self, lines: int = 5) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip().splitlines()
        self._log.seek(0, os.SEEK_END)
        return " | ".join(text[-lines:]) or "(no output)"

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop the emulator and every process it started (they share its process group)."""
        process = self.process
        if process is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                if _group_gone(process, grace):
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> GoogleEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def _group_gone(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until no process of `process`'s group is left (reaping the leader), up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        time.sleep(0.05)
    return False
