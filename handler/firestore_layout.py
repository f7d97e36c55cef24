"""Where the handler keeps its shared state in Firestore: collection and field names, defined once.

`infra/` declares the TTL policy on `EXPIRY_FIELD` of `IDEMPOTENCY_COLLECTION`; the stores read and write them.
"""

IDEMPOTENCY_COLLECTION = "idempotency"
"""One document per idempotency key (document ID: a hash of the key)."""

EXPIRY_FIELD = "expireAt"
"""A Timestamp; Firestore's TTL policy deletes the document some time after it passes."""

DEAD_LETTER_COLLECTION = "deadLetters"
"""One document per dead letter; large bodies continue in its `chunks` subcollection."""
