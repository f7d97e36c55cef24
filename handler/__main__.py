"""Run the handler the way its container does: one process listening on $PORT."""

from __future__ import annotations

import os

import uvicorn

from handler import environment


def main() -> None:
    port = int(os.environ.get(environment.PORT, "8080"))
    # Cloud Run sends SIGTERM and allows 10 s before SIGKILL; let uvicorn drain within that.
    uvicorn.run("handler.app:app", host="0.0.0.0", port=port, log_level="info",
                timeout_graceful_shutdown=8, access_log=False)


if __name__ == "__main__":
    main()
