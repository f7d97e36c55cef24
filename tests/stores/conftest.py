"""Each store under test, built fresh per test: the in-process ones, and the Firestore ones against Google's
Firestore emulator (one emulator per session; a fresh project per test keeps tests apart)."""

from __future__ import annotations

import uuid

from local.google_emulators import GoogleEmulator
from tasklane.core.firestore_client import LazyFirestore

TEST_DATABASE = "tasklane-test"


def fresh_firestore(emulator: GoogleEmulator) -> LazyFirestore:
    """A database no other test uses (the emulator makes projects and databases on first write)."""
    assert emulator.host_port
    return LazyFirestore(project=f"tasklane-{uuid.uuid4().hex[:12]}", database=TEST_DATABASE)


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
