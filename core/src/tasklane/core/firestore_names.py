"""Where the handler keeps its shared state in Firestore: defined once here, referenced by infra/ too.

The stack declares the database (its name reaches the handler as TASKLANE_FIRESTORE_DATABASE) and a TTL
policy on IDEMPOTENCY_COLLECTION's EXPIRY_FIELD. Dead letters have no TTL: an operator deletes them.
"""

IDEMPOTENCY_COLLECTION = "tasklaneIdempotency"
"""One document per idempotency key, named by the key's SHA-256 (keys may hold any character)."""

EXPIRY_FIELD = "expireAt"
"""A Timestamp on every idempotency document: when Firestore's TTL policy may delete it."""

DEAD_LETTER_COLLECTION = "tasklaneDeadLetters"
"""One document per dead letter; its body is in a subcollection beneath it (handler/firestore_dead_letters.py)."""
