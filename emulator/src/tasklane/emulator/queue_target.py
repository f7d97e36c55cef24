"""A queue's HttpTarget: overrides of every HTTP task's URL, method, headers and token, applied at dispatch.

Source: target.proto (google-cloud-tasks `tasks_v2.types.target`): "When specified at the Queue level, all tasks
with HttpRequest are overridden according to the target". The URI override replaces the scheme, host, port (0
clears it), path and query it sets; in IF_NOT_EXISTS mode only where the task's URL has none of its own (a task's
URL always has a scheme and a host, so only its port, path and query can be missing; the component-wise reading is
ours, the proto says no more). A method override to one that takes no body drops the body ("if the value is set to
GET the body of the task will be ignored at execution time"). Header overrides replace the task's header of the
same name. A queue's OIDC or OAuth token replaces the task's. App Engine tasks are not affected.

Checked when a queue is created or updated (`validation.validate_queue_config`), so an attempt never meets an
override it cannot apply.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tasklane.emulator.validation import (
    BODY_METHODS,
    IF_NOT_EXISTS,
    METHOD_NAMES,
    RESERVED_HEADER,
    SCHEMES,
)


def overrides(target: Any, attempt: Any) -> dict[str, Any]:
    """The fields of `attempt` (an engine.Attempt) the queue's HttpTarget changes, with their new values. Header
    overrides of reserved names (User-Agent, X-CloudTasks-*, ...) are left out, as a task's own are."""
    changed: dict[str, Any] = {}
    if target.http_method:
        changed["method"] = METHOD_NAMES[target.http_method]
        if target.http_method not in BODY_METHODS:
            changed["body"] = b""
    if target.header_overrides:
        headers = dict(attempt.headers)
        for override in target.header_overrides:
            name = override.header.key
            if RESERVED_HEADER.fullmatch(name):
                continue
            for existing in [key for key in headers if key.lower() == name.lower()]:
                del headers[existing]
            headers[name] = override.header.value
        changed["headers"] = headers
    authorization = target.WhichOneof("authorization_header")
    if authorization == "oidc_token":
        oidc = target.oidc_token
        changed.update(oidc_email=oidc.service_account_email, oidc_audience=oidc.audience, oauth_email=None)
    elif authorization == "oauth_token":
        changed.update(oidc_email=None, oidc_audience=None, oauth_email=target.oauth_token.service_account_email)
    if target.HasField("uri_override"):
        changed["url"] = _overridden_url(target.uri_override, attempt.url)
    return changed


def _overridden_url(uri: Any, url: str) -> str:
    task = urlsplit(url)
    only_missing = uri.uri_override_enforce_mode == IF_NOT_EXISTS
    scheme = SCHEMES[uri.scheme] if uri.scheme in SCHEMES and not only_missing else task.scheme
    host = task.hostname or ""
    if ":" in host:  # an IPv6 address, bracketed again in the netloc
        host = f"[{host}]"
    if uri.HasField("host") and not only_missing:
        host = uri.host
    port = task.port
    if uri.HasField("port") and not (only_missing and port is not None):
        port = uri.port or None
    path = task.path
    if uri.HasField("path_override") and not (only_missing and path not in ("", "/")):
        path = uri.path_override.path
        if path and not path.startswith("/"):
            path = "/" + path
    query = task.query
    if uri.HasField("query_override") and not (only_missing and query):
        query = uri.query_override.query_params
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((scheme, netloc, path, query, task.fragment))
