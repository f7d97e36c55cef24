"""A queue's HttpTarget: overrides of every HTTP task's URL, method, headers and token, applied at dispatch.

Source: target.proto (google-cloud-tasks `tasks_v2.types.target`): "When specified at the Queue level, all tasks
with HttpRequest are overridden according to the target". The URI override replaces the scheme, host, port (0
clears it), path and query it sets; in IF_NOT_EXISTS mode only where the task's URL has none of its own (a task's
URL always has a scheme and a host, so only its port, path and query can be missing; the component-wise reading is
ours, the proto says no more). A method override to one that takes no body drops the body ("if the value is set to
GET the body of the task will be ignored at execution time"). Header overrides replace the task's header of the
same name. A queue's OIDC or OAuth token replaces the task's. App Engine tasks are not affected.

Checked when a queue is created or updated (`check_http_target`), so an attempt never meets an override it
cannot apply.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tasklane.emulator import errors

HTTP, HTTPS = 1, 2
SCHEMES = {HTTP: "http", HTTPS: "https"}
IF_NOT_EXISTS, ALWAYS = 1, 2
ENFORCE_MODES = (0, IF_NOT_EXISTS, ALWAYS)
MAX_PORT = 65_535
HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x20\x7f?#]")
FORBIDDEN_IN_QUERY = re.compile(r"[\x00-\x20\x7f#]")


def check_http_target(target: Any, method_names: dict[int, str]) -> None:
    """INVALID_ARGUMENT for an override no attempt could be sent with (messages inferred: not recorded). A method
    that takes no body is allowed: a task's body is then dropped at dispatch."""
    if target.http_method and target.http_method not in method_names:
        raise errors.invalid(f"HttpTarget.httpMethod {target.http_method} is not an HttpMethod; allowed: "
                             f"{', '.join(method_names.values())}.")  # inferred
    uri = target.uri_override
    if uri.HasField("scheme") and uri.scheme and uri.scheme not in SCHEMES:  # SCHEME_UNSPECIFIED: no override
        raise errors.invalid(f"UriOverride.scheme {uri.scheme} is not HTTP or HTTPS.")  # inferred
    if uri.HasField("host") and not HOST.fullmatch(uri.host):
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


def overrides(target: Any, attempt: Any, method_names: dict[int, str], body_methods: frozenset[int],
              reserved: re.Pattern[str]) -> dict[str, Any]:
    """The fields of `attempt` (an engine.Attempt) the queue's HttpTarget changes, with their new values. Header
    overrides whose names are `reserved` (User-Agent, X-CloudTasks-*, ...) are left out, as a task's own are."""
    changed: dict[str, Any] = {}
    if target.http_method:
        changed["method"] = method_names[target.http_method]
        if target.http_method not in body_methods:
            changed["body"] = b""
    if target.header_overrides:
        headers = dict(attempt.headers)
        for override in target.header_overrides:
            name = override.header.key
            if reserved.fullmatch(name):
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
