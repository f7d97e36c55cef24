"""The HTTP port: the Cloud Tasks REST API (/v2/…, rest_api.py), OIDC discovery and signing keys (so
handlers verify task tokens as they would Google's), health, and an inspection API over queues, tasks and
every dispatch attempt."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.console import ConsoleConfig, console_routes, decode_cursor, encode_cursor
from tasklane.emulator.dispatcher import INTERRUPTED, AttemptRecord
from tasklane.emulator.faults import Faults
from tasklane.emulator.rest_api import rest_routes
from tasklane.emulator.rpc import CloudTasksApi
from tasklane.emulator.tokens import TokenIssuer

LATEST_CLOCK = 221_845_392_000.0
"""9000-01-01T00:00:00Z: the latest a manual clock can be moved to. Moved past year 9999, every CreateTask answered
500 (its times no longer fit a Timestamp); this leaves room for schedule times, backoffs and tombstones ahead."""


async def _json(request: Request) -> Any:
    """The request's JSON body; ValueError (with what is wrong) for anything else."""
    try:
        return json.loads(await request.body(), parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"the body is not valid JSON: {error}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


ATTEMPT_OUTCOMES = ("in_flight", "succeeded", "retrying", "gave_up", "gone", INTERRUPTED)
ATTEMPTS_PAGE, MOST_ATTEMPTS_PAGE = 1000, 10_000


def attempt_json(record: AttemptRecord) -> dict[str, Any]:
    shown = dataclasses.asdict(record)
    del shown["request_body"], shown["seq"]
    return shown


def create_http_app(api: CloudTasksApi, tokens: TokenIssuer, base_url: str, console: ConsoleConfig | None = None,
                    host: str = "127.0.0.1") -> Starlette:
    engine, dispatcher, faults = api.engine, api.dispatcher, api.faults

    def message(value: Any) -> dict[str, Any]:
        return json_format.MessageToDict(value, preserving_proto_field_name=False)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def discovery(request: Request) -> JSONResponse:
        return JSONResponse(tokens.discovery(base_url))

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(tokens.jwks(), headers={"Cache-Control": "public, max-age=3600"})

    async def pem_certs(request: Request) -> JSONResponse:
        return JSONResponse(tokens.pem_certificates(), headers={"Cache-Control": "public, max-age=3600"})

    async def queues(request: Request) -> JSONResponse:
        listed = []
        for state in engine.queues.values():
            runtime = dispatcher.runtimes.get(state.name)
            listed.append({**message(state.queue), "tasks": len(state.tasks),
                           "inFlight": runtime.in_flight if runtime else 0,
                           "peakInFlight": runtime.peak_in_flight if runtime else 0})
        return JSONResponse({"queues": listed})

    async def tasks(request: Request) -> JSONResponse:
        queue = request.query_params.get("queue")
        listed = [{**message(state.task), "executionCount": state.execution_count, "inFlight": state.in_flight}
                  for state in engine.tasks.values() if queue is None or state.queue == queue]
        return JSONResponse({"tasks": listed})

    async def attempts(request: Request) -> JSONResponse:
        """Attempts oldest first, filtered by queue, task and outcome (each exact, any combination), in pages
        of `pageSize` (default 1000) with `nextPageToken` while more match."""
        params = request.query_params
        unknown = sorted(set(params) - {"task", "queue", "outcome", "pageSize", "pageToken"})
        task, queue, outcome = params.get("task"), params.get("queue"), params.get("outcome")
        size_text = params.get("pageSize", str(ATTEMPTS_PAGE))
        try:
            if unknown:
                raise ValueError(f"unknown parameter {', '.join(unknown)}: filter by queue, task and outcome, "
                                 "page with pageSize and pageToken")
            if outcome is not None and outcome not in ATTEMPT_OUTCOMES:
                raise ValueError(f"outcome must be one of {', '.join(ATTEMPT_OUTCOMES)}")
            if not size_text.isdigit() or not 1 <= int(size_text) <= MOST_ATTEMPTS_PAGE:
                raise ValueError(f"pageSize must be 1 to {MOST_ATTEMPTS_PAGE}")
            after = decode_cursor(params["pageToken"]) if params.get("pageToken") else None
            if after is not None and (len(after) != 3 or not isinstance(after[0], int | float)):
                raise ValueError("invalid pageToken: pass the nextPageToken of an earlier call")
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        size = int(size_text)
        records = list(dispatcher.attempts)
        start = 0
        if after is not None:  # just past the last record returned (or, if it was pruned since, its start time)
            key = (after[0], after[1], after[2])
            start = next((i + 1 for i, r in enumerate(records) if (r.started, r.task, r.attempt) == key),
                         next((i for i, r in enumerate(records) if r.started > after[0]), len(records)))
        listed: list[AttemptRecord] = []
        position = start
        while position < len(records) and len(listed) <= size:
            record = records[position]
            position += 1
            if (task is None or record.task == task) and (queue is None or record.queue == queue) and \
                    (outcome is None or record.outcome == outcome):
                listed.append(record)
        answer: dict[str, Any] = {"attempts": [attempt_json(record) for record in listed[:size]]}
        if len(listed) > size:
            last = listed[size - 1]
            answer["nextPageToken"] = encode_cursor([last.started, last.task, last.attempt])
        return JSONResponse(answer)

    async def clock(request: Request) -> JSONResponse:
        manual = isinstance(engine.clock, ManualClock)
        if request.method == "POST":
            if not isinstance(engine.clock, ManualClock):
                return JSONResponse({"error": "the emulator runs on the system clock; start it with "
                                              "--manual-clock to move time"}, status_code=409)
            try:
                body = await _json(request)
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            seconds = body.get("seconds") if isinstance(body, dict) else None
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 <= seconds < math.inf:
                return JSONResponse({"error": "send {\"seconds\": N} with N >= 0"}, status_code=400)
            if engine.clock.now() + seconds > LATEST_CLOCK:
                return JSONResponse({"error": f"the clock can move at most {LATEST_CLOCK - engine.clock.now():.0f} s "
                                              "further, to 9000-01-01T00:00:00Z: past it, schedule and retry "
                                              "times would leave the Timestamp range"}, status_code=400)
            engine.clock.advance(float(seconds))
            dispatcher.wake()
        return JSONResponse({"now": engine.clock.now(), "manual": manual})

    async def faults_route(request: Request) -> JSONResponse:
        if request.method == "PUT":
            try:
                faults.apply(Faults.from_json(await _json(request)))
            except ValueError as error:
                return JSONResponse({"error": f"invalid faults, nothing changed: {error}"}, status_code=400)
        return JSONResponse({"latency": faults.latency, "errorRate": faults.error_rate,
                             "errorCode": faults.error_code.name})

    return Starlette(routes=[
        *console_routes(api, console or ConsoleConfig(), host),
        Route("/healthz", health),
        Route("/.well-known/openid-configuration", discovery),
        Route("/oauth2/v3/certs", jwks),
        Route("/oauth2/v1/certs", pem_certs),
        Route("/v1/queues", queues),
        Route("/v1/tasks", tasks),
        Route("/v1/attempts", attempts),
        Route("/v1/clock", clock, methods=["GET", "POST"]),
        Route("/v1/faults", faults_route, methods=["GET", "PUT"]),
        *rest_routes(api),
    ])
