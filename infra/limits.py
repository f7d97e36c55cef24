"""Hard limits of Cloud Tasks and Cloud Run that the stack's settings are checked against.

Each value is defined here once; sources are in ../shared/reference/cloud-tasks-behaviour.md
(section numbers in the comments) and the Cloud Run documentation.
"""

from __future__ import annotations

# Cloud Tasks queue rate limits (3.1, 3.2).
MAX_DISPATCHES_PER_SECOND = 500.0
MAX_CONCURRENT_DISPATCHES = 5000

# RetryConfig.max_attempts: -1 means unlimited (2.1). Zero means "service default" in the API,
# which would silently become 100, so the stack refuses it.
UNLIMITED_ATTEMPTS = -1

# HTTP task dispatch_deadline range (4.5).
MIN_DISPATCH_DEADLINE_SECONDS = 15.0
MAX_DISPATCH_DEADLINE_SECONDS = 30 * 60.0

# Cloud Run request timeout upper bound (11.2).
MAX_REQUEST_TIMEOUT_SECONDS = 60 * 60.0

# Cloud Run per-instance request concurrency and instance counts.
MAX_CONTAINER_CONCURRENCY = 1000
MAX_INSTANCES = 1000

# Cloud Run CPU choices and the most memory each allows, in MiB.
MAX_MEMORY_MIB_BY_CPU = {"1": 4096, "2": 8192, "4": 16384, "6": 24576, "8": 32768}
MIN_MEMORY_MIB = 128
