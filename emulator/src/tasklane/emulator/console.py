"""The console: a web page at the emulator's HTTP root showing queues, tasks, every attempt and dead letters,
with the buttons a developer reaches for (run now, delete, pause, resume, purge, replay).

The page is plain HTML, CSS and JavaScript from emulator/console/ (nothing to build); it polls the JSON
endpoints under /console/api/ about once a second. Every action goes through `CloudTasksApi.invoke` with the
RPC's own request message, exactly as a gRPC or REST call would, so the engine's refusals reach the page as
they would reach a client.

Safety: the emulator listens on loopback by default. Actions are POSTs that must carry the page's per-run token
in a custom header (which a cross-site page can neither read nor send without a CORS preflight, which is never
granted), must not come from another origin (Origin, Sec-Fetch-Site), and must name this server in Host (no DNS
rebinding).
"""

from __future__ import annotations

import base64
import bisect
import inspect
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tasklane.core.dead_letter_store import CorruptLetter, Replay, StoredLetter, replay_request, utc_now
from tasklane.emulator.dead_letters import CombinedLetters, LetterSource, LettersUnavailable
from tasklane.emulator.dispatcher import AttemptRecord
from tasklane.emulator.errors import ApiError
from tasklane.emulator.rpc import CloudTasksApi
from tasklane.emulator.tokens import decode_unverified

STATIC = Path(__file__).resolve().parent / "console"
TOKEN_HEADER = "X-Tasklane-Console"
PAGE_SIZE, MOST_PAGE = 50, 500
BODY_SHOWN = 64 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@dataclass
class ConsoleConfig:
    letters: LetterSource | None = None
    replay_url: str | None = None
    """Where a replayed letter is sent when the emulator no longer has its original attempts (base URL)."""
    replay_oidc_email: str | None = None


def decode_body(body: bytes) -> dict[str, Any]:
    """The body as the page shows it: JSON (pretty), else UTF-8 text, else hex; at most BODY_SHOWN bytes."""
    shown, cut = body[:BODY_SHOWN], len(body) > BODY_SHOWN
    try:
        text = shown.decode("utf-8")
    except UnicodeDecodeError:
        return {"as": "hex", "text": shown.hex(" ", 1), "bytes": len(body), "truncated": cut}
    if not cut:
        try:
            return {"as": "json", "text": json.dumps(json.loads(text), indent=2, ensure_ascii=False),
                    "bytes": len(body), "truncated": False}
        except (ValueError, RecursionError):
            pass
    return {"as": "text", "text": text, "bytes": len(body), "truncated": cut}


def shown_headers(headers: dict[str, str]) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Headers with any bearer token replaced, and the token's decoded claims (never the raw token)."""
    shown, claims = {}, None
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            try:
                claims = decode_unverified(token)
                shown[name] = f"{scheme} <OIDC token: claims shown below>"
            except (ValueError, IndexError, TypeError):
                shown[name] = f"{scheme} <token hidden>"
        else:
            shown[name] = value
    return shown, claims


@dataclass
class _Listing:
    members: set[str]
    names: list[str]
    ids: list[str]


def _lower_id(name: str) -> str:
    return name.rsplit("/", 1)[1].lower()


class Console:
    def __init__(self, api: CloudTasksApi, config: ConsoleConfig, host: str) -> None:
        self.api, self.config, self.host = api, config, host
        self.engine, self.dispatcher = api.engine, api.dispatcher
        self.letters = config.letters or CombinedLetters([])
        self.token = secrets.token_urlsafe(24)
        self._sorted: dict[str, _Listing] = {}

    # -- Reads --------------------------------------------------------------------------------------

    def _micros(self, stamp: Any) -> float | None:
        return stamp.seconds + stamp.nanos / 1e9 if stamp.seconds or stamp.nanos else None

    async def overview(self) -> dict[str, Any]:
        now = self.engine.clock.now()
        recent: dict[str, int] = {}
        outcomes: dict[str, dict[str, int]] = {}
        for record in reversed(self.dispatcher.attempts):  # newest last; stop at the first older than a minute
            if record.started < now - 60:
                break
            recent[record.queue] = recent.get(record.queue, 0) + 1
            counts = outcomes.setdefault(record.queue, {})
            counts[record.outcome] = counts.get(record.outcome, 0) + 1
        queues = []
        for name, state in sorted(self.engine.queues.items()):
            queue = state.queue
            runtime = self.dispatcher.runtimes.get(name)
            limits, retry = queue.rate_limits, queue.retry_config
            queues.append({
                "name": name, "id": name.rsplit("/", 1)[1], "state": "paused" if state.paused else "running",
                "depth": len(state.tasks), "inFlight": runtime.in_flight if runtime else 0,
                "dispatchesLastMinute": recent.get(name, 0),
                "limitPerMinute": round(limits.max_dispatches_per_second * 60, 3),
                "outcomesLastMinute": outcomes.get(name, {}),
                "rate": {"maxDispatchesPerSecond": limits.max_dispatches_per_second,
                         "maxBurstSize": limits.max_burst_size,
                         "maxConcurrentDispatches": limits.max_concurrent_dispatches},
                "retry": json_format.MessageToDict(retry),
            })
        try:
            letters: int | None = len(await self.letters.list())
            unavailable = None
        except LettersUnavailable as error:
            letters, unavailable = None, str(error)
        return {"now": now, "queues": queues, "deadLetters": letters, "deadLetterSource": self.letters.description,
                "deadLettersUnavailable": unavailable}

    def _names(self, queue: str) -> tuple[list[str], list[str]]:
        """The queue's task names, sorted, and their IDs in lower case (for search). Kept between requests and
        brought up to date by set difference, so a page costs a bisect and a slice, not a sort of the queue."""
        current = self.engine.queues[queue].tasks
        cached = self._sorted.get(queue)
        if cached is None:
            names = sorted(current)
            cached = _Listing(set(current), names, [_lower_id(name) for name in names])
            self._sorted[queue] = cached
        elif cached.members != current:
            added, removed = current - cached.members, cached.members - current
            if len(added) + len(removed) > len(current) // 20 + 100:
                names = sorted(current)
                cached.names, cached.ids = names, [_lower_id(name) for name in names]
            else:
                for name in removed:
                    index = bisect.bisect_left(cached.names, name)
                    del cached.names[index], cached.ids[index]
                for name in added:
                    index = bisect.bisect_left(cached.names, name)
                    cached.names.insert(index, name)
                    cached.ids.insert(index, _lower_id(name))
            cached.members = set(current)
        return cached.names, cached.ids

    def tasks(self, queue: str, search: str, after: str, limit: int) -> dict[str, Any]:
        if queue not in self.engine.queues:
            raise KeyError(queue)
        names, ids = self._names(queue)
        start = bisect.bisect_right(names, after) if after else 0
        wanted = search.strip().lower()
        if wanted:
            positions: list[int] = [i for i in range(start, len(ids)) if wanted in ids[i]]
        else:
            positions = list(range(start, min(len(names), start + limit + 1)))
        page: list[dict[str, Any]] = []
        for used, position in enumerate(positions, start=1):
            state = self.engine.tasks.get(names[position])
            if state is not None:
                page.append(self._task_row(names[position], state))
            if len(page) == limit:
                more = used < len(positions)
                break
        else:
            more = False
        return {"queue": queue, "total": len(names), "matched": len(positions) if wanted else None, "tasks": page,
                "next": page[-1]["name"] if page and more else None}

    def _task_row(self, name: str, state: Any) -> dict[str, Any]:
        task = state.task
        status = task.last_attempt.response_status
        return {"name": name, "id": name.rsplit("/", 1)[1], "scheduleTime": self._micros(task.schedule_time),
                "createTime": self._micros(task.create_time), "attempts": task.dispatch_count,
                "responses": task.response_count, "inFlight": state.in_flight,
                "lastStatus": (f"{_CODE_NAMES.get(status.code, status.code)}: {status.message}"
                               if task.dispatch_count and (status.code or status.message) else None)}

    def _attempts_of(self, name: str) -> list[AttemptRecord]:
        return [record for record in self.dispatcher.attempts if record.task == name]

    def task(self, name: str) -> dict[str, Any]:
        records = self._attempts_of(name)
        state = self.engine.tasks.get(name)
        attempts = []
        for record in records:
            headers, claims = shown_headers(record.request_headers)
            attempts.append({
                "attempt": record.attempt, "started": record.started, "finished": record.finished,
                "latencyMs": round((record.finished - record.started) * 1000, 1) if record.finished else None,
                "status": record.status, "outcome": record.outcome, "error": record.error,
                "method": record.method, "url": record.url, "headers": headers, "tokenClaims": claims,
                "responseBody": record.response_body})
        body: bytes | None = None
        task_info: dict[str, Any] | None = None
        if state is not None:
            task = state.task
            kind = task.WhichOneof("message_type")
            body = bytes(getattr(task, kind).body) if kind else b""
            task_info = {"scheduleTime": self._micros(task.schedule_time),
                         "createTime": self._micros(task.create_time), "attempts": task.dispatch_count,
                         "responses": task.response_count, "inFlight": state.in_flight,
                         "dispatchDeadline": task.dispatch_deadline.ToJsonString()}
            status = "in flight" if state.in_flight else ("waiting to retry" if task.dispatch_count else "queued")
        elif records:
            body = records[-1].request_body
            last = records[-1]
            status = {"succeeded": f"finished: succeeded (HTTP {last.status})",
                      "gave_up": f"finished: gave up after {last.attempt} attempts (last HTTP {last.status})",
                      "gone": "deleted while its attempt was running"}.get(last.outcome, "deleted")
            if last.outcome in ("retrying", "in_flight"):
                status = "deleted"
        elif self.engine._tombstoned(self.engine._task_tombstones, name):
            status = "deleted or finished (no attempts recorded)"
        else:
            raise KeyError(name)
        return {"name": name, "id": name.rsplit("/", 1)[-1], "queue": name.split("/tasks/")[0],
                "exists": state is not None, "status": status, "task": task_info,
                "body": decode_body(body) if body is not None else None, "attempts": attempts}

    async def dead_letters(self, limit: int) -> dict[str, Any]:
        """The newest `limit` letters with their bodies: the store's record (`StoredLetter.summary`), the body
        decoded."""
        letters = await self.letters.list()
        shown = [await self.letters.with_body(letter) for letter in letters[:limit]]
        return {"source": self.letters.description, "total": len(letters),
                "letters": [{**letter.summary(), "body": decode_body(letter.body or b"")} for letter in shown]}

    # -- Actions ------------------------------------------------------------------------------------

    async def act(self, action: str, name: str) -> str:
        """Perform an action through the RPC table; a line saying what was done. ApiError when refused."""
        rpc_names = {"run": "RunTask", "delete": "DeleteTask", "pause": "PauseQueue", "resume": "ResumeQueue",
                     "purge": "PurgeQueue"}
        if action == "replay":
            return await self.replay(name)
        if action not in rpc_names:
            raise ValueError(f"unknown action {action!r}")
        rpc = self.api.rpcs[rpc_names[action]]
        request = rpc.request_type()
        request.name = name  # type: ignore[attr-defined]
        await self.api.invoke(rpc, request)
        done = {"run": "dispatched now", "delete": "deleted", "pause": "paused", "resume": "resumed",
                "purge": "purged"}[action]
        return f"{name.rsplit('/', 1)[1]}: {done}"

    async def replay(self, letter_id: str) -> str:
        """A new task from the letter, by the same rule as `tasklane dead-letters replay`
        (`replay_request`), recorded on the letter where it is kept."""
        letter = await self.letters.get(letter_id)
        if letter is None:
            raise ValueError(f"no dead letter {letter_id}")
        replay = replay_request(letter)
        queue = self._queue_of(letter)
        url, email, audience = self._target_of(letter)
        rpc = self.api.rpcs["CreateTask"]
        request: Any = rpc.request_type()
        request.parent = queue
        http = request.task.http_request
        http.url = url
        http.http_method = {"GET": 2, "HEAD": 3, "PUT": 4, "DELETE": 5, "PATCH": 6, "OPTIONS": 7}.get(
            letter.method.upper(), 1)
        if http.http_method in (1, 4, 6):
            http.body = replay.body
        http.headers["Content-Type"] = replay.content_type
        http.headers.update(replay.headers)
        if email:
            http.oidc_token.service_account_email = email
            http.oidc_token.audience = audience or url
        created = await self.api.invoke(rpc, request)
        task_name = str(created.name)  # type: ignore[attr-defined]
        await self.letters.record_replay(letter.id, Replay(utc_now(), task_name, replay.idempotency_key))
        return f"replayed {letter.id[:12]} as {task_name.rsplit('/', 1)[1]}"

    def _queue_of(self, letter: StoredLetter) -> str:
        names = list(self.engine.queues)
        wanted = letter.queue_name or ""
        for name in names:
            if name == wanted or name.rsplit("/", 1)[1] == wanted:
                return name
        if len(names) == 1:
            return names[0]
        raise ValueError(f"no queue {wanted or '(unnamed)'} to replay letter {letter.id} into")

    def _target_of(self, letter: StoredLetter) -> tuple[str, str | None, str | None]:
        """URL, OIDC account and audience: the original task's, from its attempts, else the configured ones."""
        task_id = letter.task_name.rsplit("/", 1)[-1] if letter.task_name else None
        for record in reversed(self.dispatcher.attempts):
            if task_id and record.task.rsplit("/", 1)[1] == task_id:
                _, claims = shown_headers(record.request_headers)
                return (record.url, claims.get("email") if claims else None,
                        claims.get("aud") if claims else None)
        if self.config.replay_url:
            base = self.config.replay_url.rstrip("/")
            return f"{base}{letter.path}", self.config.replay_oidc_email, base if self.config.replay_oidc_email \
                else None
        raise ValueError("the original task's attempts are no longer in the emulator's history and no replay "
                         "target is configured (--console-replay-url); replay with `tasklane dead-letters replay`")

    # -- HTTP ---------------------------------------------------------------------------------------

    def refuse_cross_site(self, request: Request) -> str | None:
        """Why a mutating request is refused, or None."""
        host = request.headers.get("host", "")
        if not self._own_host(host):
            return f"Host {host!r} is not this console's"
        origin = request.headers.get("origin")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return f"cross-origin request from {origin!r}"
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request (Sec-Fetch-Site: {site})"
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), self.token):
            return f"missing or wrong {TOKEN_HEADER} token: reload the console"
        return None

    def _own_host(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_NAMES or name == self.host or self.host in ("0.0.0.0", "::")  # noqa: S104


def console_routes(api: CloudTasksApi, config: ConsoleConfig, host: str) -> list[Route]:
    console = Console(api, config, host)
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", console.token)
    security = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                "X-Frame-Options": "DENY", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

    async def index(request: Request) -> Response:
        if not console._own_host(request.headers.get("host", "")):
            return JSONResponse({"error": "unknown Host"}, status_code=421)
        return HTMLResponse(page, headers=security)

    async def static(request: Request) -> Response:
        file = request.path_params["file"]
        if file not in ("console.js", "console.css"):
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(STATIC / file, headers={"Cache-Control": "no-cache"})

    def read(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not console._own_host(request.headers.get("host", "")):
                return JSONResponse({"error": "unknown Host"}, status_code=421)
            try:
                answer = handler(request)
                if inspect.isawaitable(answer):
                    answer = await answer
                return JSONResponse(answer, headers={"Cache-Control": "no-store"})
            except KeyError as missing:
                return JSONResponse({"error": f"not found: {missing.args[0]}"}, status_code=404)
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)
            except LettersUnavailable as error:
                return JSONResponse({"error": str(error)}, status_code=503)
        return endpoint

    def limit_of(request: Request) -> int:
        text = request.query_params.get("limit", str(PAGE_SIZE))
        if not text.isdigit() or not 1 <= int(text) <= MOST_PAGE:
            raise ValueError(f"limit must be 1 to {MOST_PAGE}")
        return int(text)

    async def action(request: Request) -> Response:
        refused = console.refuse_cross_site(request)
        if refused is not None:
            return JSONResponse({"error": f"refused: {refused}"}, status_code=403)
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or not isinstance(body.get("action"), str) \
                    or not isinstance(body.get("name"), str):
                raise ValueError("send {\"action\": ..., \"name\": ...}")
            return JSONResponse({"message": await console.act(body["action"], body["name"])})
        except ApiError as error:
            return JSONResponse({"error": f"{error.code.name}: {error.message}"}, status_code=409)
        except (LettersUnavailable, CorruptLetter) as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        except (ValueError, KeyError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)

    return [
        Route("/", index),
        Route("/console/{file}", static),
        Route("/console/api/overview", read(lambda r: console.overview())),
        Route("/console/api/tasks", read(lambda r: console.tasks(
            r.query_params.get("queue", ""), r.query_params.get("q", ""), r.query_params.get("after", ""),
            limit_of(r)))),
        Route("/console/api/task", read(lambda r: console.task(r.query_params.get("name", "")))),
        Route("/console/api/dead-letters", read(lambda r: console.dead_letters(limit_of(r)))),
        Route("/console/api/actions", action, methods=["POST"]),
    ]


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(token: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid pageToken: pass the nextPageToken of an earlier call") from None
    if not isinstance(values, list):
        raise ValueError("invalid pageToken: pass the nextPageToken of an earlier call")
    return values
