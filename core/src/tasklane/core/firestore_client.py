"""One async Firestore client per process, made on first use inside the running event loop.

grpc.aio binds a channel to the loop it is created in; the handler's application is built before
uvicorn starts its loop, so the client waits for the first call. With FIRESTORE_EMULATOR_HOST set the
library talks to Google's Firestore emulator (no credentials); otherwise to Firestore with the
runtime's Application Default Credentials.
"""

from __future__ import annotations

import asyncio

from google.cloud.firestore import AsyncClient


class LazyFirestore:
    def __init__(self, project: str, database: str) -> None:
        self.project = project
        self.database = database
        self._client: AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = AsyncClient(project=self.project, database=self.database)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the client's gRPC channel, in the loop it was made in (else grpc.aio complains at exit)."""
        client, self._client = self._client, None
        api = getattr(client, "_firestore_api_internal", None)
        if api is not None:
            await api.transport.close()
