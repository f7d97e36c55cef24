"""Shared pytest configuration, and Google's emulators, each started once per session when a test asks.

Where an emulator cannot run here, its tests skip with the reason; under CI (CI=true) that fails the run
instead, since CI must exercise them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from local.google_emulators import FIRESTORE, PUBSUB, EmulatorKind, GoogleEmulator, why_unavailable

# The emulator's fixtures come from its pytest plugin (tasklane-emulator's `pytest11` entry point), as for any user.


def running_emulator(kind: EmulatorKind) -> Iterator[GoogleEmulator]:
    """Start `kind` on a free loopback port for the session, or skip (fail under CI) saying why it cannot run."""
    reason = why_unavailable(kind)
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    emulator = GoogleEmulator(kind).start()
    try:
        yield emulator
    finally:
        emulator.stop()


def exported(kind: EmulatorKind) -> Iterator[GoogleEmulator]:
    """`running_emulator(kind)`, with its environment variable set while the session runs (and restored)."""
    for emulator in running_emulator(kind):
        previous = os.environ.get(kind.environment_variable)
        os.environ.update(emulator.environment())
        try:
            yield emulator
        finally:
            if previous is None:
                os.environ.pop(kind.environment_variable, None)
            else:
                os.environ[kind.environment_variable] = previous


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[GoogleEmulator]:
    """Google's Firestore emulator; FIRESTORE_EMULATOR_HOST is set while the session runs."""
    yield from exported(FIRESTORE)


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[GoogleEmulator]:
    """Google's Pub/Sub emulator; PUBSUB_EMULATOR_HOST is set while the session runs."""
    yield from exported(PUBSUB)
