"""The task handler's HTTP application.

For now it answers Cloud Run's health check; the task routes come with the handler issue.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/", health, methods=["GET"])])
