"""The gRPC transport: google.cloud.tasks.v2.CloudTasks, served from the engine.

Requests and responses are the official protobuf messages, so the unmodified Google clients (Python
sync and async, Node) talk to it over an insecure channel. RPCs the emulator does not implement answer
UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.cloud.tasks_v2.types import cloudtasks
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from emulator.dispatcher import Dispatcher
from emulator.engine import Engine
from emulator.errors import ApiError, storage_failed, unimplemented
from emulator.faults import Faults
from emulator.store import StorageError

SERVICE = "google.cloud.tasks.v2.CloudTasks"
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
NOT_IMPLEMENTED = ("BatchCreateTasks", "BatchDeleteTasks", "GetCmekConfig", "UpdateCmekConfig", "GetIamPolicy",
                   "SetIamPolicy", "TestIamPermissions")


def _message(request_type: Any) -> Any:
    return request_type.pb()


class CloudTasksService:
    def __init__(self, engine: Engine, dispatcher: Dispatcher, faults: Faults) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.faults = faults

    # Each takes the raw request message and returns the raw response message.
    def create_queue(self, r: Any) -> Any:
        return self.engine.create_queue(r.parent, r.queue)

    def update_queue(self, r: Any) -> Any:
        return self.engine.update_queue(r.queue, r.update_mask)

    def get_queue(self, r: Any) -> Any:
        return self.engine.get_queue(r.name)

    def list_queues(self, r: Any) -> Any:
        queues, token = self.engine.list_queues(r.parent, r.filter, r.page_size, r.page_token)
        return _message(cloudtasks.ListQueuesResponse)(queues=queues, next_page_token=token)

    def delete_queue(self, r: Any) -> Any:
        self.engine.delete_queue(r.name)
        return empty_pb2.Empty()

    def pause_queue(self, r: Any) -> Any:
        return self.engine.pause_queue(r.name)

    def resume_queue(self, r: Any) -> Any:
        return self.engine.resume_queue(r.name)

    def purge_queue(self, r: Any) -> Any:
        return self.engine.purge_queue(r.name)

    def create_task(self, r: Any) -> Any:
        return self.engine.create_task(r.parent, r.task, r.response_view)

    def get_task(self, r: Any) -> Any:
        return self.engine.get_task(r.name, r.response_view)

    def list_tasks(self, r: Any) -> Any:
        tasks, token = self.engine.list_tasks(r.parent, r.response_view, r.page_size, r.page_token)
        return _message(cloudtasks.ListTasksResponse)(tasks=tasks, next_page_token=token)

    def delete_task(self, r: Any) -> Any:
        self.engine.delete_task(r.name)
        return empty_pb2.Empty()

    def run_task(self, r: Any) -> Any:
        """Dispatches at once and answers before the target does (§10.5)."""
        _, state = self.engine.run_task(r.name, r.response_view)
        self.dispatcher.run_now(state)
        return self.engine.get_task(r.name, r.response_view)

    def handlers(self) -> grpc.GenericRpcHandler:
        routes: dict[str, tuple[Any, Callable[[Any], Any]]] = {
            "CreateQueue": (cloudtasks.CreateQueueRequest, self.create_queue),
            "UpdateQueue": (cloudtasks.UpdateQueueRequest, self.update_queue),
            "GetQueue": (cloudtasks.GetQueueRequest, self.get_queue),
            "ListQueues": (cloudtasks.ListQueuesRequest, self.list_queues),
            "DeleteQueue": (cloudtasks.DeleteQueueRequest, self.delete_queue),
            "PauseQueue": (cloudtasks.PauseQueueRequest, self.pause_queue),
            "ResumeQueue": (cloudtasks.ResumeQueueRequest, self.resume_queue),
            "PurgeQueue": (cloudtasks.PurgeQueueRequest, self.purge_queue),
            "CreateTask": (cloudtasks.CreateTaskRequest, self.create_task),
            "GetTask": (cloudtasks.GetTaskRequest, self.get_task),
            "ListTasks": (cloudtasks.ListTasksRequest, self.list_tasks),
            "DeleteTask": (cloudtasks.DeleteTaskRequest, self.delete_task),
            "RunTask": (cloudtasks.RunTaskRequest, self.run_task),
        }
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {name: grpc.unary_unary_rpc_method_handler(
            self._serve(name, _parsing(_message(request_type), call)), request_deserializer=lambda raw: raw,
            response_serializer=lambda message: message.SerializeToString())
            for name, (request_type, call) in routes.items()}
        for name in NOT_IMPLEMENTED:
            methods[name] = grpc.unary_unary_rpc_method_handler(
                self._serve(name, _unimplemented(name)), request_deserializer=lambda raw: raw,
                response_serializer=lambda message: message)
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _serve(self, name: str, call: Callable[[Any], Any]) -> Handler:
        async def serve(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                await self.faults.before(name)
                try:
                    return call(request)
                except StorageError as failure:
                    raise storage_failed(str(failure), failure.full) from None
            except ApiError as error:
                status = status_pb2.Status(code=error.code.value[0], message=error.message, details=error.details)
                await context.abort(error.code, error.message,
                                    trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),))
        return serve


def _parsing(message_type: Any, call: Callable[[Any], Any]) -> Callable[[bytes], Any]:
    """Parse the request here, so malformed bytes get INVALID_ARGUMENT naming the expected message."""
    def parse_then_call(raw: bytes) -> Any:
        try:
            request = message_type.FromString(raw)
        except DecodeError:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Request is not a valid {message_type.DESCRIPTOR.full_name} message.") from None
        return call(request)
    return parse_then_call


def _unimplemented(name: str) -> Callable[[Any], Any]:
    def refuse(request: Any) -> Any:
        raise unimplemented(name)
    return refuse
