"""The REST transport: Cloud Tasks v2 as JSON over HTTP under /v2/…, on the emulator's HTTP port.

Each request is transcoded as Google's front end does it (the `google.api.http` rules in rpc.py): path
variables, the JSON body and query parameters fill the RPC's own request message, which goes through the
same `CloudTasksApi.invoke` as a gRPC call; the answer is the response message in proto3 JSON (camelCase,
"10s" durations, RFC 3339 times, base64 bytes, enums by name, or by number when asked with
`$alt=json;enum-encoding=int`). Errors take Google's REST shape with the HTTP status for their code.

What Google's front end answers is recorded only in part; the messages below for malformed JSON, values
of the wrong type and unknown query parameters follow its published wording where it could be found, and
are marked "inferred" where not (README, "The REST surface").
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tasklane.emulator.errors import HTTP_STATUS, ApiError, bad_request
from tasklane.emulator.rpc import CloudTasksApi, Rpc

JSON_TYPE = "application/json; charset=UTF-8"
# Google's system parameters, which any method accepts and which bind to no request field.
SYSTEM_PARAMETERS = frozenset({"alt", "$alt", "prettyPrint", "$prettyPrint", "fields", "$fields", "key",
                               "access_token", "oauth_token", "quotaUser", "$.xgafv", "callback", "$callback",
                               "upload_protocol", "uploadType"})
# Messages whose JSON form is a scalar (a string or number), parsed whole by json_format.
SCALAR_MESSAGES = frozenset({"google.protobuf.Duration", "google.protobuf.Timestamp", "google.protobuf.FieldMask",
                             "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
                             "google.protobuf.Any", "google.protobuf.Empty"} |
                            {f"google.protobuf.{kind}Value" for kind in ("Double", "Float", "Int64", "UInt64",
                                                                          "Int32", "UInt32", "Bool", "String",
                                                                          "Bytes")})
VERBS = ["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"]


@dataclass(frozen=True)
class RestRoute:
    rpc: Rpc
    path: re.Pattern[str]
    variables: dict[str, str]
    """Regex group → request field path ("parent", "queue.name")."""


def compile_route(rpc: Rpc) -> RestRoute:
    """The rule's path template as a regex over the raw (still percent-encoded) path: `*` is one segment."""
    pattern, variables, position = "", {}, 0
    template = rpc.http.template
    for number, variable in enumerate(re.finditer(r"\{([\w.]+)=([^}]+)\}", template)):
        pattern += re.escape(template[position:variable.start()])
        parts = variable.group(2).split("/")
        # A segment is anything but "/"; the last may not hold ":" either, which starts a custom verb (":pause"). The
        # others may: a domain-scoped project ID is "example.com:my-project", and clients send ":" unescaped.
        segments = ((("[^/:]+" if index == len(parts) - 1 else "[^/]+") if segment == "*" else re.escape(segment))
                    for index, segment in enumerate(parts))
        pattern += f"(?P<v{number}>{'/'.join(segments)})"
        variables[f"v{number}"] = variable.group(1)
        position = variable.end()
    pattern += re.escape(template[position:])
    return RestRoute(rpc, re.compile(pattern), variables)


def rest_routes(api: CloudTasksApi) -> list[Route]:
    routes = [compile_route(rpc) for rpc in api.rpcs.values()]

    async def serve(request: Request) -> Response:
        raw_path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        for route in routes:
            match = route.path.fullmatch(raw_path)
            if match and route.rpc.http.verb == request.method:
                break
        else:  # Google's front end: a path and verb no method has is an HTML 404, not an API error
            return not_found(urllib.parse.unquote(raw_path))
        integer_enums = "enum-encoding=int" in request.query_params.get("$alt", "").split(";")
        try:
            message = transcode(route, match, request.query_params.multi_items(), await request.body())
            answer = await api.invoke(route.rpc, message)
        except ApiError as error:
            return error_response(error)
        return json_response(json_format.MessageToDict(answer, use_integers_for_enums=integer_enums), 200)

    return [Route("/v2/{path:path}", serve, methods=VERBS)]


def transcode(route: RestRoute, match: re.Match[str], query: list[tuple[str, str]], body: bytes) -> Message:
    """The request message, from the JSON body, the query parameters and the path, in that order."""
    message = route.rpc.request_type()
    rule = route.rpc.http
    if rule.body is not None:
        target = message if rule.body == "*" else getattr(message, rule.body)
        target.SetInParent()
        _merge_json(_json_object(body), target, "" if rule.body == "*" else rule.body)
    bound_by_body = rule.body == "*"
    for name, value in query:
        if name not in SYSTEM_PARAMETERS:
            _bind_query_parameter(message, name, value, refuse=bound_by_body or _under(name, rule.body))
        elif name == "alt" and value != "json":
            raise bad_request(f'Invalid value for "alt": "{value}"; the emulator answers JSON only.')  # inferred
    for group, field_path in route.variables.items():
        *parents, last = field_path.split(".")
        holder = message
        for parent in parents:
            holder = getattr(holder, parent)
        setattr(holder, last, urllib.parse.unquote(match.group(group)))
    return message


def _under(parameter: str, body_field: str | None) -> bool:
    return body_field is not None and parameter.split(".")[0] in (body_field, _camel(body_field))


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise bad_request(f"Invalid JSON payload received. {reason}.") from None  # inferred past the first sentence
    if not isinstance(value, dict):
        raise bad_request("Invalid JSON payload received. Expected an object.")  # inferred
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"Unexpected token {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object naming a field twice is refused, as protobuf's JSON parser does (json.loads kept the last)."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise ValueError(f'Duplicate field "{key}"')  # inferred
        value[key] = item
    return value


def _merge_json(value: dict[str, Any], target: Message, path: str) -> None:
    try:
        json_format.ParseDict(value, target, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        # Only on failure: walk the body to name the first field at fault, as Google's message does.
        raise _first_problem(value, target.DESCRIPTOR, path) or bad_request(
            f"Invalid JSON payload received. {error}") from None  # inferred: a case the walk does not name


def _first_problem(value: dict[str, Any], descriptor: Any, path: str) -> ApiError | None:
    for key, item in value.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None:
            where = f" at '{path}'" if path else ""
            return bad_request(f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.',
                               path)
        child = f"{path}.{field.name}" if path else field.name
        if item is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(item, dict):
                return _invalid_value(field, item, child)
            value_field = field.message_type.fields_by_name["value"]
            for entry_key, entry in item.items():
                if (problem := _element_problem(value_field, entry, f"{child}[{entry_key}]")) is not None:
                    return problem
        elif field.is_repeated:
            if not isinstance(item, list):
                return _invalid_value(field, item, child)
            for index, element in enumerate(item):
                if (problem := _element_problem(field, element, f"{child}[{index}]")) is not None:
                    return problem
        elif (problem := _element_problem(field, item, child)) is not None:
            return problem
    return None


def _element_problem(field: FieldDescriptor, item: Any, path: str) -> ApiError | None:
    message_type = field.message_type
    if message_type is not None and message_type.full_name not in SCALAR_MESSAGES:
        if not isinstance(item, dict):
            return _invalid_value(field, item, path)
        return _first_problem(item, message_type, path)
    holder = message_factory.GetMessageClass(field.containing_type)()  # type: ignore[arg-type]
    try:
        json_format.ParseDict({field.json_name: [item] if field.is_repeated else item},
                              holder)
    except (json_format.ParseError, ValueError, TypeError):
        return _invalid_value(field, item, path)
    return None


def _invalid_value(field: FieldDescriptor, item: Any, path: str) -> ApiError:
    named = field.message_type or field.enum_type
    type_names: Any = descriptor_pb2.FieldDescriptorProto.Type
    kind = f"type.googleapis.com/{named.full_name}" if named is not None else type_names.Name(field.type)
    return bad_request(f"Invalid value at '{path}' ({kind}), {json.dumps(item)}", path)


def _bind_query_parameter(message: Message, name: str, value: str, refuse: bool) -> None:
    """`pageSize=10`, `updateMask=a.b,c`, `responseView=FULL`: camelCase or snake_case, dotted for nesting."""
    descriptor: Any = message.DESCRIPTOR
    nested: dict[str, Any] = {}
    holder = nested
    parts = name.split(".")
    field: FieldDescriptor | None = None
    chain: list[FieldDescriptor] = []
    for index, part in enumerate(parts):
        field = None if descriptor is None else (descriptor.fields_by_camelcase_name.get(part)
                                                 or descriptor.fields_by_name.get(part))
        if field is not None:
            chain.append(field)
        if refuse or field is None or (index < len(parts) - 1 and field.message_type is None):
            raise bad_request(f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter. '
                              f"Field '{name}' could not be found in request message.")  # inferred
        if index < len(parts) - 1:
            holder = holder.setdefault(field.json_name, {})
            descriptor = field.message_type
    assert field is not None
    leaf: Any = value
    if field.message_type is not None and field.message_type.full_name == "google.protobuf.FieldMask":
        # `updateMask=a&updateMask=b` is one mask of both paths: the second no longer replaces the first.
        existing: Any = message
        for link in chain:
            existing = getattr(existing, link.name)
        leaf = ",".join(_camel(path) for path in [*existing.paths, *value.split(",")])
    elif field.type == FieldDescriptor.TYPE_BOOL:
        leaf = {"true": True, "false": False}.get(value, value)
    holder[field.json_name] = [leaf] if field.is_repeated else leaf
    _merge_json(nested, message, "")


def _camel(path: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda letter: letter.group(1).upper(), path)


def error_response(error: ApiError) -> Response:
    body: dict[str, Any] = {"code": HTTP_STATUS[error.code], "message": error.message, "status": error.code.name}
    if error.details:
        body["details"] = [json_format.MessageToDict(detail) for detail in error.details]
    return json_response({"error": body}, HTTP_STATUS[error.code])


def json_response(body: Any, status: int) -> Response:
    return Response(json.dumps(body, indent=2, ensure_ascii=False) + "\n", status_code=status, media_type=JSON_TYPE)


def not_found(path: str) -> Response:
    """Google's front-end page for a URL no method serves (its wording, in short)."""
    return HTMLResponse(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"
        f"  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>{html.escape(path)}</code> "
        "was not found on this server.  <ins>That’s all we know.</ins>\n", status_code=404)
