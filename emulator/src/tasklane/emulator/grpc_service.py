"""The gRPC transport: google.cloud.tasks.v2.CloudTasks, served from the dispatch table in rpc.py.

Requests and responses are the official protobuf messages, so the unmodified Google clients (Python
sync and async, Node) talk to it over an insecure channel. RPCs the emulator does not implement answer
UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from tasklane.emulator.errors import ApiError
from tasklane.emulator.rpc import SERVICE, CloudTasksApi, Rpc

Handler = Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def grpc_handlers(api: CloudTasksApi) -> grpc.GenericRpcHandler:
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            _serve(api, rpc), request_deserializer=lambda raw: raw,
            response_serializer=lambda message: message.SerializeToString())
        for name, rpc in api.rpcs.items()}
    return grpc.method_handlers_generic_handler(SERVICE, methods)


def _serve(api: CloudTasksApi, rpc: Rpc) -> Handler:
    async def serve(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await api.invoke(rpc, _parsed(rpc.request_type, raw))
        except ApiError as error:
            status = status_pb2.Status(code=error.code.value[0], message=error.message, details=error.details)
            await context.abort(error.code, error.message,
                                trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),))
    return serve


def _parsed(message_type: type[Message], raw: bytes) -> Message:
    """Parse the request here, so malformed bytes get INVALID_ARGUMENT naming the expected message."""
    try:
        return message_type.FromString(raw)
    except DecodeError:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"Request is not a valid {message_type.DESCRIPTOR.full_name} message.") from None
