"""`FirestoreIdempotencyStore`: the idempotency store shared by every instance of the service.

One document per key in `idempotency`, named by the key's SHA-256:
`{key, state: "started" | "done", leaseUntil, lease, expireAt}`.

- `begin` is one transaction: read the document; ALREADY_DONE if it is done; IN_PROGRESS if another
  delivery holds a lease that has not run out; otherwise write a lease as long as the dispatch deadline
  (after that Cloud Tasks has given up on the delivery holding it) and answer STARTED. Firestore
  serialises transactions on a document, so of two concurrent deliveries on any instances one starts.
- `succeeded` marks the key done, with `expireAt` for the TTL policy (7 days on by default).
- `abandoned` deletes the key, in a transaction, only while it still holds the delivery's own lease: a
  delivery whose lease ran out and was taken over (on any instance, this one too) must not release the newer
  delivery's claim.

Every document has `expireAt`, leases too (their end plus the retention), so keys of crashed deliveries
are collected as well. Times are the instances' clocks, which Cloud Run keeps synchronised.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Callable
from typing import Any

from google.cloud.firestore import AsyncTransaction, async_transactional

from tasklane.core.firestore_client import LazyFirestore
from tasklane.core.firestore_names import EXPIRY_FIELD, IDEMPOTENCY_COLLECTION
from tasklane.handler.idempotency import Claim

DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
# Concurrent deliveries of one key contend for one document; Firestore aborts all but one and the
# client retries the others with backoff.
TRANSACTION_ATTEMPTS = 10
STARTED, DONE = "started", "done"


def document_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


class FirestoreIdempotencyStore:
    def __init__(self, firestore: LazyFirestore, lease_seconds: float,
                 retention_seconds: float = DEFAULT_RETENTION_SECONDS, collection: str = IDEMPOTENCY_COLLECTION,
                 clock: Callable[[], float] = time.time) -> None:
        self.firestore = firestore
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.collection = collection
        self._clock = clock

    def _ref(self, key: str) -> Any:
        return self.firestore.client().collection(self.collection).document(document_id(key))

    async def begin(self, key: str, lease: str) -> Claim:
        client = self.firestore.client()
        ref = self._ref(key)

        @async_transactional
        async def claim(transaction: AsyncTransaction) -> Claim:
            snapshot = await ref.get(transaction=transaction)
            now = self._clock()
            if snapshot.exists:
                data = snapshot.to_dict() or {}
                if data.get("state") == DONE:
                    return Claim.ALREADY_DONE
                lease_until = data.get("leaseUntil")
                if isinstance(lease_until, datetime.datetime) and lease_until.timestamp() > now:
                    return Claim.IN_PROGRESS
            lease_until = now + self.lease_seconds
            transaction.set(ref, {"key": key, "state": STARTED, "lease": lease, "leaseUntil": _utc(lease_until),
                                  EXPIRY_FIELD: _utc(lease_until + self.retention_seconds)})
            return Claim.STARTED

        return await claim(client.transaction(max_attempts=TRANSACTION_ATTEMPTS))

    async def succeeded(self, key: str) -> None:
        now = self._clock()
        await self._ref(key).set({"key": key, "state": DONE, "doneAt": _utc(now),
                                  EXPIRY_FIELD: _utc(now + self.retention_seconds)})

    async def abandoned(self, key: str, lease: str) -> None:
        client = self.firestore.client()
        ref = self._ref(key)

        @async_transactional
        async def release(transaction: AsyncTransaction) -> None:
            snapshot = await ref.get(transaction=transaction)
            data = (snapshot.to_dict() or {}) if snapshot.exists else {}
            if data.get("state") == STARTED and data.get("lease") == lease:
                transaction.delete(ref)

        await release(client.transaction(max_attempts=TRANSACTION_ATTEMPTS))
