"""Names of the environment variables the handler reads.

Defined once here; `infra/` sets the TASKLANE_* ones on the Cloud Run service and the handler reads them.
"""

QUEUE_PATH = "TASKLANE_QUEUE_PATH"
"""Full queue path, projects/P/locations/L/queues/Q: the queue whose tasks this service handles."""

INVOKER_SERVICE_ACCOUNT = "TASKLANE_INVOKER_SERVICE_ACCOUNT"
"""Email of the service account Cloud Tasks signs task tokens as; tokens for anyone else are refused."""

TASK_AUDIENCE = "TASKLANE_TASK_AUDIENCE"
"""The `aud` claim task tokens carry."""

TASK_DISPATCH_DEADLINE = "TASKLANE_TASK_DISPATCH_DEADLINE"
"""The dispatch deadline producers set on tasks ("600s"): how long Cloud Tasks waits for an answer."""

MAX_ATTEMPTS = "TASKLANE_MAX_ATTEMPTS"
"""The queue's RetryConfig.max_attempts (-1 for unlimited), so the handler knows a task's final attempt."""

PORT = "PORT"
"""The port Cloud Run tells the container to listen on (default 8080)."""

HOST = "HOST"
"""The address to listen on: all interfaces in the container (the default); loopback in local runs and tests."""

TOKEN_CHECK = "TASKLANE_TOKEN_CHECK"
"""How the handler checks task tokens behind Cloud Run's own check: off, claims or full (see handler/auth.py)."""

TOKEN_ISSUERS = "TASKLANE_TOKEN_ISSUERS"
"""Comma-separated accepted `iss` values; Google's by default, the emulator's in local runs."""

DEMO_ACTIONS = "TASKLANE_DEMO_ACTIONS"
"""true adds the demo actions of handler/demo_actions.py (make local); never set in the deployed service."""

TOKEN_CERTS_URL = "TASKLANE_TOKEN_CERTS_URL"
"""Where the token signing keys are published as {kid: PEM}; Google's by default, the emulator's locally."""

IDLE_TIMEOUT = "TASKLANE_IDLE_TIMEOUT_SECONDS"
"""Seconds a connection may stay open without starting a request (after opening or after an answer)."""

REQUEST_READ_TIMEOUT = "TASKLANE_REQUEST_READ_TIMEOUT_SECONDS"
"""Seconds from a request's first byte until all of it, headers and body, must have arrived."""

FIRESTORE_DATABASE = "TASKLANE_FIRESTORE_DATABASE"
"""The pipeline's Firestore database ID: shared idempotency keys and dead letters. Unset: in-process stores.
It is in the queue's project; FIRESTORE_EMULATOR_HOST, when set, points the client at Google's emulator."""

FIRESTORE_EMULATOR_HOST = "FIRESTORE_EMULATOR_HOST"
"""Google's own variable: host:port of the Firestore emulator, which the Firestore client then talks to."""

DEAD_LETTER_DIR = "TASKLANE_DEAD_LETTER_DIR"
"""A directory to keep dead letters in as files, when there is no Firestore (make local without the
Firestore emulator). Never set in the deployed service."""

PUSH_SERVICE_ACCOUNT = "TASKLANE_PUSH_SERVICE_ACCOUNT"
"""Email of the account Pub/Sub pushes task-operation records as (the /task-operations route)."""

PUSH_TOKEN_CHECK = "TASKLANE_PUSH_TOKEN_CHECK"
"""How the /task-operations route checks Pub/Sub's push tokens (off, claims, full); defaults to TOKEN_CHECK.
Google's Pub/Sub emulator signs nothing, so the local pipeline sets it to off."""

TRACE_EXPORTER = "TASKLANE_TRACE_EXPORTER"
"""Where the handler's spans go: cloud-trace (deployed), log (make local: one log line per span) or off."""
