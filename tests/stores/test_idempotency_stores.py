"""One behavioural suite for every idempotency store, so their semantics cannot drift.

Each test runs against the in-process store and against FirestoreIdempotencyStore on Google's Firestore
emulator. Tests about several instances sharing keys run only where instances can share.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tasklane.core.firestore_client import LazyFirestore
from tasklane.core.firestore_names import EXPIRY_FIELD, IDEMPOTENCY_COLLECTION
from tasklane.handler.firestore_idempotency import FirestoreIdempotencyStore, document_id
from tasklane.handler.idempotency import Claim, IdempotencyStore, InProcessIdempotencyStore
from tests.stores.conftest import FakeClock, fresh_firestore

LEASE = 600.0


@dataclass
class Stores:
    """Builds stores that share state as instances of one service would (for Firestore: one database)."""

    name: str
    clock: FakeClock
    make: Callable[[], IdempotencyStore]
    shared: bool
    firestore: LazyFirestore | None = None


@pytest.fixture(params=["in_process", "firestore"])
def stores(request: pytest.FixtureRequest) -> Stores:
    clock = FakeClock()
    if request.param == "in_process":
        store = InProcessIdempotencyStore(lease_seconds=LEASE, clock=clock)
        return Stores("in_process", clock, lambda: store, shared=False)
    firestore = fresh_firestore(request.getfixturevalue("firestore_emulator"))
    return Stores("firestore", clock, lambda: FirestoreIdempotencyStore(firestore, lease_seconds=LEASE, clock=clock),
                  shared=True, firestore=firestore)


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())


def test_a_key_is_started_once_then_in_progress_then_done(stores: Stores) -> None:
    async def scenario() -> list[Claim]:
        store = stores.make()
        claims = [await store.begin("order-1", "d1"), await store.begin("order-1", "d2")]
        await store.succeeded("order-1")
        claims += [await store.begin("order-1", "d3"), await store.begin("order-2", "d4")]
        return claims

    assert run(scenario) == [Claim.STARTED, Claim.IN_PROGRESS, Claim.ALREADY_DONE, Claim.STARTED]


def test_an_abandoned_key_can_be_started_again_and_done_stays_done(stores: Stores) -> None:
    async def scenario() -> list[Claim]:
        store = stores.make()
        claims = [await store.begin("k", "d1")]
        await store.abandoned("k", "d1")
        claims.append(await store.begin("k", "d2"))
        await store.succeeded("k")
        await store.abandoned("k", "d2")  # a late release never undoes done
        claims.append(await store.begin("k", "d3"))
        return claims

    assert run(scenario) == [Claim.STARTED, Claim.STARTED, Claim.ALREADY_DONE]


def test_a_lease_runs_out_after_the_dispatch_deadline(stores: Stores) -> None:
    """Cloud Tasks has given up on a delivery after its deadline; a later one may take the key over."""

    async def scenario() -> list[Claim]:
        store = stores.make()
        claims = [await store.begin("k", "d1")]
        stores.clock.advance(LEASE - 1)
        claims.append(await store.begin("k", "d2"))
        stores.clock.advance(2)
        claims.append(await store.begin("k", "d3"))
        claims.append(await store.begin("k", "d4"))
        return claims

    assert run(scenario) == [Claim.STARTED, Claim.IN_PROGRESS, Claim.STARTED, Claim.IN_PROGRESS]


def test_of_concurrent_deliveries_exactly_one_starts(stores: Stores) -> None:
    """Four at once, over two instances. (Google's emulator settles each write conflict by a lock wait of about
    2 s, so more contenders only make this test slower, not stronger.)"""

    async def scenario() -> list[Claim]:
        instances = [stores.make() for _ in range(2)]
        return list(await asyncio.gather(*(instances[i % 2].begin("hot", f"d{i}") for i in range(4))))

    claims = run(scenario)
    assert claims.count(Claim.STARTED) == 1
    assert claims.count(Claim.IN_PROGRESS) == 3


def test_keys_of_any_shape_are_kept_apart(stores: Stores) -> None:
    keys = ["a/b", "a", "A", "é" * 300, "x" * 500, "projects/p/queues/q/tasks/t", " ", "..", "__name__"]

    async def scenario() -> list[Claim]:
        store = stores.make()
        for key in keys:
            assert await store.begin(key, "first") is Claim.STARTED
        await store.succeeded(keys[0])
        return [await store.begin(key, "second") for key in keys]

    assert run(scenario) == [Claim.ALREADY_DONE] + [Claim.IN_PROGRESS] * (len(keys) - 1)


def test_done_is_seen_by_every_instance(stores: Stores) -> None:
    if not stores.shared:
        pytest.skip("the in-process store serves one instance by design")

    async def scenario() -> list[Claim]:
        one, two = stores.make(), stores.make()
        claims = [await one.begin("k", "d1"), await two.begin("k", "d2")]
        await one.succeeded("k")
        claims.append(await two.begin("k", "d3"))
        return claims

    assert run(scenario) == [Claim.STARTED, Claim.IN_PROGRESS, Claim.ALREADY_DONE]


def test_a_delivery_whose_lease_was_taken_over_cannot_release_the_newer_one(stores: Stores) -> None:
    """On two instances or on one: the claim is the delivery's (its lease), not the store object's. Keyed by key
    alone, a lapsed delivery's failure on the same instance released its successor's claim, and a third delivery
    started while the second still ran."""

    async def scenario(one: IdempotencyStore, two: IdempotencyStore, three: IdempotencyStore) -> list[Claim]:
        claims = [await one.begin("k", "first")]
        stores.clock.advance(LEASE + 1)
        claims.append(await two.begin("k", "second"))  # takes over the lapsed lease
        await one.abandoned("k", "first")  # the old delivery finally fails
        claims.append(await three.begin("k", "third"))
        await two.abandoned("k", "second")  # the holder's own release works
        claims.append(await three.begin("k", "fourth"))
        return claims

    same = stores.make()
    assert run(lambda: scenario(same, same, same)) == [Claim.STARTED, Claim.STARTED, Claim.IN_PROGRESS, Claim.STARTED]
    if stores.shared:
        stores.clock.advance(LEASE + 1)
        others = (stores.make(), stores.make(), stores.make())
        assert run(lambda: scenario(*others)) == [Claim.STARTED, Claim.STARTED, Claim.IN_PROGRESS, Claim.STARTED]


def test_firestore_documents_carry_the_ttl_field(stores: Stores) -> None:
    if stores.firestore is None:
        pytest.skip("Firestore only")
    firestore = stores.firestore

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        store = stores.make()
        ref = firestore.client().collection(IDEMPOTENCY_COLLECTION).document(document_id("k"))
        await store.begin("k", "d1")
        lease = (await ref.get()).to_dict()
        await store.succeeded("k")
        done = (await ref.get()).to_dict()
        assert lease is not None and done is not None
        return lease, done

    lease, done = run(scenario)
    now = stores.clock.now
    assert lease["state"] == "started" and lease["key"] == "k"
    assert lease["leaseUntil"] == datetime.datetime.fromtimestamp(now + LEASE, datetime.UTC)
    assert isinstance(lease[EXPIRY_FIELD], datetime.datetime)
    assert done["state"] == "done"
    assert done[EXPIRY_FIELD] == datetime.datetime.fromtimestamp(now + 7 * 24 * 3600, datetime.UTC)
