"""Run the handler the way its container does: one process listening on $PORT."""

from __future__ import annotations

import gc

# Importing the server and framework allocates many long-lived objects; collecting them while
# starting only delays the first answer. The app's lifespan freezes them and turns collection back on.
gc.disable()

import os
import signal
import sys
from types import FrameType

import uvicorn

from handler.service import create_service_app
from tasklane.core import environment
from tasklane.core.logs import logging_config
from tasklane.handler.config import ConfigError, HandlerConfig
from tasklane.handler.server import protocol_with_deadlines

# Cloud Run sends SIGTERM and allows 10 s before SIGKILL: stop accepting, finish in-flight requests.
GRACEFUL_SHUTDOWN_SECONDS = 8


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main() -> None:
    port = int(os.environ.get(environment.PORT, "8080"))
    host = os.environ.get(environment.HOST, "0.0.0.0")
    try:
        config = HandlerConfig.from_environment()
    except ConfigError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    # uvicorn drains on SIGTERM, then re-raises the signal to the handler installed before it started.
    # A drained shutdown is a clean one, so that handler exits 0 (as it does if SIGTERM comes first).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(create_service_app(config), host=host, port=port, loop="uvloop",
                http=protocol_with_deadlines(config.request_read_timeout_seconds),
                timeout_keep_alive=config.idle_timeout_seconds,  # type: ignore[arg-type] # uvicorn takes floats
                log_config=logging_config(), access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)


if __name__ == "__main__":
    main()
