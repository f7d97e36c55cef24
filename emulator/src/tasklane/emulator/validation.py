"""Request validation and normalisation, in the order and with the messages of the real service.

Sources: ../shared/reference/cloud-tasks-behaviour.md (section numbers below) and the recorded answers
in ../shared/reference/real-cloud-tasks/. Messages not recorded there are marked "inferred".
"""

from __future__ import annotations

import functools
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yarl
from google.cloud.tasks_v2.types import queue as queue_types
from google.cloud.tasks_v2.types import target as target_types
from google.cloud.tasks_v2.types import task as task_types

from tasklane.emulator import errors

Queue = queue_types.Queue.pb()
Task = task_types.Task.pb()
RetryConfig = queue_types.RetryConfig.pb()
HttpMethod = target_types.HttpMethod

# Used with fullmatch only: `$` in match() also matches before a final newline.
PARENT = re.compile(r"projects/([A-Za-z0-9\-:.]+)/locations/([A-Za-z0-9-]+)")
QUEUE_NAME = re.compile(r"(projects/[A-Za-z0-9\-:.]+/locations/[A-Za-z0-9-]+)/queues/([A-Za-z0-9-]{1,100})")
TASK_NAME = re.compile(r"(.*)/tasks/(.*)", re.S)
TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")

# Limits (§3.1, §3.2, §4.5, §4.10, §6.1, §6.6).
MAX_RATE = 500.0
MAX_CONCURRENT = 5000
MIN_DEADLINE, MAX_HTTP_DEADLINE, MAX_APP_ENGINE_DEADLINE = 15.0, 1800.0, 24 * 3600.0 + 15.0
DEFAULT_HTTP_DEADLINE = 600.0
MAX_URL_LENGTH = 2083
MAX_HEADERS_BYTES = 80 * 1024
MAX_TASK_BYTES = 1_048_569  # measured against the real service: 1 MiB - 7 of serialized Task
MAX_SCHEDULE_AHEAD = 720 * 3600.0
# What google.protobuf's Timestamp and Duration can hold: 0001-01-01 to 9999-12-31, and ±10,000 years.
MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS = -62_135_596_800, 253_402_300_799
MAX_DURATION_SECONDS = 315_576_000_000
# Plain ints: the raw messages hold ints, and comparing them with proto-plus enums is slow on the CreateTask path.
POST, UNSPECIFIED_METHOD = int(HttpMethod.POST), int(HttpMethod.HTTP_METHOD_UNSPECIFIED)
BODY_METHODS = frozenset({POST, int(HttpMethod.PUT), int(HttpMethod.PATCH)})
APP_ENGINE_BODY_METHODS = frozenset({POST, int(HttpMethod.PUT)})
"""AppEngineHttpRequest.body: "allowed only if the HTTP method is POST or PUT" (target.proto)."""
METHOD_NAMES = {int(method): name for name, method in HttpMethod.__members__.items() if method != UNSPECIFIED_METHOD}

# A queue's HttpTarget (queue_target.py applies it).
HTTP, HTTPS = 1, 2
SCHEMES = {HTTP: "http", HTTPS: "https"}
IF_NOT_EXISTS, ALWAYS = 1, 2
ENFORCE_MODES = (0, IF_NOT_EXISTS, ALWAYS)
MAX_PORT = 65_535
OVERRIDE_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x20\x7f?#]")
FORBIDDEN_IN_QUERY = re.compile(r"[\x00-\x20\x7f#]")

FULL_VIEW, BASIC_VIEW = int(task_types.Task.View.FULL), int(task_types.Task.View.BASIC)

# Queue defaults when a field is unset (§2.6, §3.1, §3.2).
DEFAULT_RATE, DEFAULT_CONCURRENT = 500.0, 1000
DEFAULT_MAX_ATTEMPTS, DEFAULT_MIN_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_DOUBLINGS = 100, 0.1, 3600.0, 16

HTTP_USER_AGENT = "Google-Cloud-Tasks"
APP_ENGINE_USER_AGENT = "AppEngine-Google; (+http://code.google.com/appengine)"
# Headers a task cannot set (§7.9): the service derives or reserves them. The hop-by-hop and framing
# headers (RFC 9110 §7.6.1) belong to one connection, not to the task; they are dropped the same way
# (not recorded from the real service: see the README's known divergences).
FRAMING_HEADER = re.compile(r"host|connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade|"
                            r"expect", re.I)
RESERVED_HEADER = re.compile(rf"content-length|user-agent|x-google-.*|x-appengine-.*|x-cloudtasks-.*|"
                             rf"{FRAMING_HEADER.pattern}", re.I)
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token
FORBIDDEN_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls other than tab: CR, LF, NUL, ...
FORBIDDEN_IN_URL = re.compile(r"[\x00-\x20\x7f]")
PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass(frozen=True)
class QueueName:
    parent: str
    queue_id: str

    @property
    def path(self) -> str:
        return f"{self.parent}/queues/{self.queue_id}"


def parse_queue_name(name: str) -> QueueName:
    match = QUEUE_NAME.fullmatch(name)
    if not match:
        raise errors.invalid_queue_name()
    return QueueName(match.group(1), match.group(2))


def check_parent(parent: str) -> None:
    if not PARENT.fullmatch(parent):
        raise errors.invalid_parent(parent)


def task_id_of(task_name: str, parent_queue: str) -> str:
    """The ID in `task_name` after checking it belongs to `parent_queue`."""
    match = TASK_NAME.fullmatch(task_name)
    if not match:
        raise errors.invalid_task_id(task_name)
    queue_path, task_id = match.group(1), match.group(2)
    if not TASK_ID.fullmatch(task_id):
        raise errors.invalid_task_id(task_id)
    if queue_path != parent_queue:
        raise errors.invalid(f"The queue name from request ('{parent_queue}') must be the same as the queue name "
                             f"in the named task ('{queue_path}').")
    return task_id


def new_task_id() -> str:
    """Generated IDs look like the service's: a long string of digits (§4.2)."""
    return f"{secrets.randbelow(10**20):020d}"


def _seconds(duration: Any) -> float:
    return float(duration.seconds + duration.nanos / 1e9)


def check_duration(duration: Any, field_name: str) -> None:
    """A Duration the protobuf runtime can hold (±10,000 years, nanos of the same sign)."""
    seconds, nanos = duration.seconds, duration.nanos
    mixed_signs = seconds and nanos and (seconds < 0) != (nanos < 0)
    if abs(seconds) > MAX_DURATION_SECONDS or abs(nanos) > 999_999_999 or mixed_signs:
        raise errors.invalid(f"{field_name} must be a valid duration of at most "
                             f"{MAX_DURATION_SECONDS} seconds.")  # inferred


def check_timestamp(timestamp: Any, field_name: str) -> None:
    """A Timestamp within 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z."""
    seconds, nanos = timestamp.seconds, timestamp.nanos
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS or not 0 <= nanos <= 999_999_999:
        raise errors.invalid(f"{field_name} must be between 0001-01-01T00:00:00Z and "
                             "9999-12-31T23:59:59.999999999Z.")  # inferred


def validate_queue_config(queue: Any) -> None:
    """Range checks on the values a client sent (§2, §3, §10.8); `burst` is output only and ignored."""
    rate_limits, retry = queue.rate_limits, queue.retry_config
    rate = rate_limits.max_dispatches_per_second
    if math.isnan(rate):
        raise errors.invalid("RateLimits.maxDispatchesPerSecond must be a number, not NaN.")  # inferred
    if rate < 0:
        raise errors.invalid("RateLimits.maxDispatchesPerSecond cannot be negative.")
    if rate > MAX_RATE:
        raise errors.invalid("RateLimits.maxDispatchesPerSecond must be less than or equal to 500.")
    if rate_limits.max_concurrent_dispatches < 0:
        raise errors.invalid("RateLimits.maxConcurrentDispatches cannot be negative.")
    if rate_limits.max_concurrent_dispatches > MAX_CONCURRENT:
        raise errors.invalid("RateLimits.maxConcurrentDispatches must be less than or equal to 5000.")
    if retry.max_attempts < -1:
        raise errors.invalid("RetryConfig.maxAttempts must be greater or equal to -1.")
    for field_name in ("min_backoff", "max_backoff", "max_retry_duration"):
        check_duration(getattr(retry, field_name), f"RetryConfig.{_camel(field_name)}")
    if retry.HasField("min_backoff") and _seconds(retry.min_backoff) < 0:
        raise errors.invalid("RetryConfig.minBackoff cannot be negative.")
    if retry.HasField("max_backoff") and _seconds(retry.max_backoff) < 0:
        raise errors.invalid("RetryConfig.maxBackoff cannot be negative.")  # inferred
    if retry.max_doublings < 0:
        raise errors.invalid("RetryConfig.maxDoublings cannot be negative.")
    if retry.HasField("max_retry_duration") and _seconds(retry.max_retry_duration) < 0:
        raise errors.invalid("RetryConfig.maxRetryDuration cannot be negative.")  # inferred
    min_backoff = _seconds(retry.min_backoff) if retry.HasField("min_backoff") else DEFAULT_MIN_BACKOFF
    max_backoff = _seconds(retry.max_backoff) if retry.HasField("max_backoff") else DEFAULT_MAX_BACKOFF
    if min_backoff > max_backoff:
        raise errors.invalid("RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff.")
    overrides = {override.header.key: override.header.value for override in queue.http_target.header_overrides}
    _task_headers(overrides, "HttpTarget.headerOverrides")  # the same rules as a task's own headers
    _check_http_target(queue.http_target)
    ratio = queue.stackdriver_logging_config.sampling_ratio
    if not 0.0 <= ratio <= 1.0:  # NaN fails too
        raise errors.invalid("StackdriverLoggingConfig.samplingRatio must be between 0.0 and 1.0, "
                             f"got {ratio}.")  # inferred


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(part.title() for part in rest)


def burst_size(rate: float) -> int:
    """Output-only max_burst_size; the formula is unpublished, this gives the documented 100 for 500/s (§3.3)."""
    return max(1, round(rate / 5))


def apply_queue_defaults(queue: Any) -> None:
    """Fill what the client left unset with the service's defaults, and derive the output-only fields."""
    rate_limits, retry = queue.rate_limits, queue.retry_config
    if rate_limits.max_dispatches_per_second == 0:
        rate_limits.max_dispatches_per_second = DEFAULT_RATE
    if rate_limits.max_concurrent_dispatches == 0:
        rate_limits.max_concurrent_dispatches = DEFAULT_CONCURRENT
    rate_limits.max_burst_size = burst_size(rate_limits.max_dispatches_per_second)
    if retry.max_attempts == 0:
        retry.max_attempts = DEFAULT_MAX_ATTEMPTS
    if not retry.HasField("min_backoff"):
        retry.min_backoff.FromNanoseconds(int(DEFAULT_MIN_BACKOFF * 1e9))
    if not retry.HasField("max_backoff"):
        retry.max_backoff.FromSeconds(int(DEFAULT_MAX_BACKOFF))
    if retry.max_doublings == 0:
        retry.max_doublings = DEFAULT_MAX_DOUBLINGS


def _pacific(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(int(epoch_seconds), UTC).astimezone(PACIFIC).isoformat()


def _has_header(headers: dict[str, str], name: str) -> bool:
    return any(key.lower() == name.lower() for key in headers)


def _check_method(request: Any, what: str) -> None:
    """POST when unset; otherwise one of HttpMethod's values. (protobuf keeps a number it does not know, and an
    attempt could not be sent with it.)"""
    if request.http_method == UNSPECIFIED_METHOD:
        request.http_method = POST
    elif request.http_method not in METHOD_NAMES:
        raise _unknown_method(request.http_method, what)


def _unknown_method(number: int, what: str) -> errors.ApiError:
    return errors.invalid(f"{what}.httpMethod {number} is not an HttpMethod; allowed: "
                          f"{', '.join(METHOD_NAMES.values())}.")  # inferred


def _check_http_target(target: Any) -> None:
    """INVALID_ARGUMENT for an override no attempt could be sent with (messages inferred: not recorded). A method
    that takes no body is allowed: a task's body is then dropped at dispatch."""
    if target.http_method and target.http_method not in METHOD_NAMES:
        raise _unknown_method(target.http_method, "HttpTarget")
    uri = target.uri_override
    if uri.HasField("scheme") and uri.scheme and uri.scheme not in SCHEMES:  # SCHEME_UNSPECIFIED: no override
        raise errors.invalid(f"UriOverride.scheme {uri.scheme} is not HTTP or HTTPS.")  # inferred
    if uri.HasField("host") and not OVERRIDE_HOST.fullmatch(uri.host):
        raise errors.invalid("UriOverride.host must be a host name or IP address, e.g. 'example.net' (not empty, no "
                             "scheme, port, path or credentials).")  # inferred
    if uri.HasField("port") and not 0 <= uri.port <= MAX_PORT:
        raise errors.invalid(f"UriOverride.port must be between 1 and {MAX_PORT}, or 0 to clear the port; got "
                             f"{uri.port}.")  # inferred
    if FORBIDDEN_IN_PATH.search(uri.path_override.path):
        raise errors.invalid("UriOverride.pathOverride.path must not contain spaces, control characters, '?' or "
                             "'#'; percent-encode them.")  # inferred
    if FORBIDDEN_IN_QUERY.search(uri.query_override.query_params):
        raise errors.invalid("UriOverride.queryOverride.queryParams must not contain spaces, control characters "
                             "or '#'; percent-encode them.")  # inferred
    if uri.uri_override_enforce_mode not in ENFORCE_MODES:
        raise errors.invalid(f"UriOverride.uriOverrideEnforceMode {uri.uri_override_enforce_mode} is not "
                             "IF_NOT_EXISTS or ALWAYS.")  # inferred
    # target.proto: "both the service account email and the audience (scope) MUST be specified when using the
    # queue-level authorization override".
    if target.HasField("oidc_token") and not (target.oidc_token.service_account_email
                                              and target.oidc_token.audience):
        raise errors.invalid("HttpTarget.oidcToken needs both serviceAccountEmail and audience.")  # inferred
    if target.HasField("oauth_token") and not (target.oauth_token.service_account_email
                                               and target.oauth_token.scope):
        raise errors.invalid("HttpTarget.oauthToken needs both serviceAccountEmail and scope.")  # inferred


def _task_headers(headers: Any, field: str) -> dict[str, str]:
    """The headers a task may send: each name a valid HTTP token, no value able to end the header line
    (CR, LF, NUL or another control character); the reserved and hop-by-hop ones dropped (§7.9)."""
    kept = {}
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            raise errors.invalid(f"{field}: {name!r} is not a valid header name; a name is one or more "
                                 "letters, digits or !#$%&'*+-.^_`|~ (no spaces or separators).")  # inferred
        if FORBIDDEN_IN_VALUE.search(value):
            raise errors.invalid(f"{field}: the value of {name!r} contains a control character (CR, "
                                 "LF, NUL or similar); only printable characters, spaces and tabs are "
                                 "allowed.")  # inferred
        if not RESERVED_HEADER.fullmatch(name):
            kept[name] = value
    return kept


@functools.lru_cache(maxsize=4096)
def check_http_url(url: str) -> None:
    """An http(s) URL the dispatcher can send to: a host, a valid port, no credentials (§4.10).

    Remembered for the URLs that pass (a refusal raises, and is not cached): a suite's tasks go to a few
    URLs, and parsing one twice (urllib, then yarl) cost more than the rest of CreateTask's checks."""
    if not url:
        raise errors.invalid("HttpRequest.url is required.")
    if not url.startswith(("http://", "https://")):
        raise errors.invalid("HttpTarget.url must start with 'http://' or 'https://'.")
    if len(url) > MAX_URL_LENGTH:
        raise errors.invalid(f"HttpRequest.url must be at most {MAX_URL_LENGTH} characters long.")  # inferred
    if FORBIDDEN_IN_URL.search(url):
        raise errors.invalid("HttpRequest.url must not contain spaces or control characters; percent-encode "
                             "them.")  # inferred
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise errors.invalid(f"HttpRequest.url is not a valid URL: {error}.") from None  # inferred
    if not parts.hostname:
        raise errors.invalid("HttpRequest.url must name a host, e.g. 'https://example.com/path'.")  # inferred
    if parts.username is not None or parts.password is not None:
        raise errors.invalid("HttpRequest.url must not carry credentials (user:password@); use an OIDC token or "
                             "a header instead.")  # inferred
    if port == 0:
        raise errors.invalid("HttpRequest.url's port must be between 1 and 65535.")  # inferred
    try:
        yarl.URL(url)  # what the dispatcher sends with
    except ValueError as error:
        raise errors.invalid(f"HttpRequest.url is not a valid URL: {error}.") from None  # inferred


def normalise_new_task(task: Any, now: float) -> None:
    """Validate a CreateTask payload and give it the stored shape (§4, happypath.json). Raises ApiError.

    The task's name is already set (generated if the client sent none), so the size limit counts it."""
    kind = task.WhichOneof("message_type")
    if kind is None:
        raise errors.invalid("Task.httpRequest or Task.appEngineHttpRequest is required.")  # inferred
    check_duration(task.dispatch_deadline, "Task.dispatchDeadline")
    check_timestamp(task.schedule_time, "Task.scheduleTime")
    deadline = _seconds(task.dispatch_deadline) if task.HasField("dispatch_deadline") else None
    if kind == "http_request":
        request = task.http_request
        check_http_url(request.url)
        if deadline is not None and not MIN_DEADLINE <= deadline <= MAX_HTTP_DEADLINE:
            raise errors.invalid("Task.dispatchDeadline must be between [15s, 30m].")
        _check_method(request, "HttpRequest")
        if request.body and request.http_method not in BODY_METHODS:
            raise errors.invalid("HttpRequest.body can only be set for POST, PUT or PATCH requests.")  # inferred
        if request.HasField("oidc_token") and not request.oidc_token.service_account_email:
            raise errors.invalid("OidcToken.serviceAccountEmail is required.")  # inferred
        if request.HasField("oauth_token") and not request.oauth_token.service_account_email:
            raise errors.invalid("OAuthToken.serviceAccountEmail is required.")  # inferred
        headers = _task_headers(request.headers, "HttpRequest.headers")
        headers["User-Agent"] = HTTP_USER_AGENT
        if sum(len(key) + len(value) + 4 for key, value in headers.items()) >= MAX_HEADERS_BYTES:
            raise errors.invalid("HttpRequest.headers must be smaller than 80KB in total.")  # inferred
        request.headers.clear()
        request.headers.update(headers)
        if deadline is None:
            task.dispatch_deadline.FromSeconds(int(DEFAULT_HTTP_DEADLINE))
    else:
        request = task.app_engine_http_request
        if deadline is not None and not MIN_DEADLINE <= deadline <= MAX_APP_ENGINE_DEADLINE:
            raise errors.invalid("Task.dispatchDeadline must be between [15s, 24h15s].")
        # target.proto: it "must begin with "/"" (empty is "/"), at most 2083 characters, no spaces. Sent after the
        # App Engine URL, "@host/..." or "x" would otherwise change the host or break the URL.
        if request.relative_uri and not request.relative_uri.startswith("/"):
            raise errors.invalid("AppEngineHttpRequest.relativeUri must begin with '/', e.g. '/work?id=1'.")  # inferred
        if len(request.relative_uri) > MAX_URL_LENGTH:
            raise errors.invalid(f"AppEngineHttpRequest.relativeUri must be at most {MAX_URL_LENGTH} characters "
                                 "long.")  # inferred
        if FORBIDDEN_IN_URL.search(request.relative_uri):
            raise errors.invalid("AppEngineHttpRequest.relativeUri must not contain spaces or control characters; "
                                 "percent-encode them.")  # inferred
        _check_method(request, "AppEngineHttpRequest")
        if request.body and request.http_method not in APP_ENGINE_BODY_METHODS:
            raise errors.invalid("AppEngineHttpRequest.body can only be set for POST or PUT requests.")  # inferred
        headers = _task_headers(request.headers, "AppEngineHttpRequest.headers")
        headers["User-Agent"] = APP_ENGINE_USER_AGENT
        if request.body:
            headers["Content-Length"] = str(len(request.body))
            if not _has_header(headers, "Content-Type"):
                headers["Content-Type"] = "application/octet-stream"
        request.headers.clear()
        request.headers.update(headers)

    scheduled = _seconds(task.schedule_time) if task.HasField("schedule_time") else 0.0
    if scheduled > now + MAX_SCHEDULE_AHEAD:
        raise errors.invalid(f"The Task.scheduleTime, {_pacific(scheduled)}, is too far in the future. Schedule "
                             "time must be no more than 720h in the future.")
    micros = int(max(scheduled, now) * 1_000_000)
    task.schedule_time.FromMicroseconds(micros)
    task.create_time.FromSeconds(int(now))
    for output_only in ("dispatch_count", "response_count", "first_attempt", "last_attempt", "view"):
        task.ClearField(output_only)
    if task.ByteSize() > MAX_TASK_BYTES:
        size = task.ByteSize()
        raise errors.invalid(f"Task size is {size} bytes; the maximum is {MAX_TASK_BYTES} bytes.")  # inferred


def with_view(task: Any, view: int) -> Any:
    """The task as a response in `view`: BASIC (the default) leaves out the body (§4.8)."""
    shown = Task()
    shown.CopyFrom(task)
    full = view == FULL_VIEW
    shown.view = FULL_VIEW if full else BASIC_VIEW
    if not full:
        kind = shown.WhichOneof("message_type")
        if kind == "http_request":
            shown.http_request.ClearField("body")
        elif kind == "app_engine_http_request":
            shown.app_engine_http_request.ClearField("body")
    return shown
