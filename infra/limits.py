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

# Cloud Run whole-CPU choices, with the least and the most memory each allows, in MiB
# (cloud.google.com/run/docs/configuring/services/cpu and …/memory-limits).
MIN_MEMORY_MIB_BY_CPU = {1: 128, 2: 128, 4: 2048, 6: 4096, 8: 4096}
MAX_MEMORY_MIB_BY_CPU = {1: 4096, 2: 8192, 4: 16384, 6: 24576, 8: 32768}
MIN_MEMORY_MIB = 128

# Fractional CPU: from 0.08 up to (not including) 1, in steps of 0.001. Below 1 CPU an instance may hold at
# most 512 MiB at less than 0.5 CPU (1 GiB from 0.5), serve one request at a time, and must have its CPU
# throttled outside requests (request-based billing).
MIN_FRACTIONAL_CPU = 0.08
FRACTIONAL_CPU_STEP = 0.001
MAX_MEMORY_MIB_BELOW_HALF_CPU = 512
MAX_MEMORY_MIB_BELOW_ONE_CPU = 1024
FRACTIONAL_CPU_MAX_CONCURRENCY = 1

# How long a new IAM grant can take to reach Cloud Run's front end: typically 2 minutes, sometimes 7 or more
# (cloud.google.com/iam/docs/access-change-propagation). A task given up sooner after the first deploy never
# reaches the handler, so the stack warns when its retries end sooner than this.
IAM_PROPAGATION_SECONDS = 10 * 60.0
