"""The one dispatch table of google.cloud.tasks.v2.CloudTasks: each RPC's request message, the engine call
that answers it and its `google.api.http` rule. The gRPC and REST transports both serve from this table,
so an RPC has one code path whatever the wire: the transports only decode the request and encode the
answer or the ApiError.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.cloud.tasks_v2.types import cloudtasks
from google.iam.v1 import iam_policy_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from tasklane.emulator.dispatcher import Dispatcher
from tasklane.emulator.engine import Engine
from tasklane.emulator.errors import storage_failed, unimplemented
from tasklane.emulator.faults import Faults
from tasklane.emulator.store import StorageError

SERVICE = "google.cloud.tasks.v2.CloudTasks"


@dataclass(frozen=True)
class HttpRule:
    """A `google.api.http` annotation of cloudtasks.proto: verb, path template, and which request field
    the JSON body fills ("*" for the whole request, None for no body)."""

    verb: str
    template: str
    body: str | None = None


@dataclass(frozen=True)
class Rpc:
    name: str
    request_type: type[Message]
    call: Callable[[Any], Message]
    http: HttpRule


QUEUE = "projects/*/locations/*/queues/*"
TASK = f"{QUEUE}/tasks/*"


class CloudTasksApi:
    """The RPCs, answered from the engine; every transport calls `invoke`."""

    def __init__(self, engine: Engine, dispatcher: Dispatcher, faults: Faults) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.faults = faults
        self.rpcs: dict[str, Rpc] = {rpc.name: rpc for rpc in self._table()}

    async def invoke(self, rpc: Rpc, request: Any) -> Message:
        """Answer one parsed request, or raise ApiError: injected faults first, then the engine."""
        await self.faults.before(rpc.name)
        try:
            return rpc.call(request)
        except StorageError as failure:
            raise storage_failed(str(failure), failure.full) from None
        finally:
            # Dispatch outcomes are saved in batches; any this answer (or error) may show reach the disk first.
            self.engine.save_unsaved()

    def _table(self) -> list[Rpc]:
        def pb(request_type: Any) -> type[Message]:
            return request_type.pb()  # type: ignore[no-any-return]

        def refuse(name: str) -> Callable[[Any], Message]:
            def call(request: Any) -> Message:
                raise unimplemented(name)
            return call

        # Paths, verbs and body bindings as cloudtasks.proto's annotations have them; tests/emulator/test_rest.py
        # checks them against the REST transport of the installed google-cloud-tasks.
        return [
            Rpc("ListQueues", pb(cloudtasks.ListQueuesRequest), self.list_queues,
                HttpRule("GET", "/v2/{parent=projects/*/locations/*}/queues")),
            Rpc("GetQueue", pb(cloudtasks.GetQueueRequest), self.get_queue,
                HttpRule("GET", f"/v2/{{name={QUEUE}}}")),
            Rpc("CreateQueue", pb(cloudtasks.CreateQueueRequest), self.create_queue,
                HttpRule("POST", "/v2/{parent=projects/*/locations/*}/queues", "queue")),
            Rpc("UpdateQueue", pb(cloudtasks.UpdateQueueRequest), self.update_queue,
                HttpRule("PATCH", f"/v2/{{queue.name={QUEUE}}}", "queue")),
            Rpc("DeleteQueue", pb(cloudtasks.DeleteQueueRequest), self.delete_queue,
                HttpRule("DELETE", f"/v2/{{name={QUEUE}}}")),
            Rpc("PurgeQueue", pb(cloudtasks.PurgeQueueRequest), self.purge_queue,
                HttpRule("POST", f"/v2/{{name={QUEUE}}}:purge", "*")),
            Rpc("PauseQueue", pb(cloudtasks.PauseQueueRequest), self.pause_queue,
                HttpRule("POST", f"/v2/{{name={QUEUE}}}:pause", "*")),
            Rpc("ResumeQueue", pb(cloudtasks.ResumeQueueRequest), self.resume_queue,
                HttpRule("POST", f"/v2/{{name={QUEUE}}}:resume", "*")),
            Rpc("ListTasks", pb(cloudtasks.ListTasksRequest), self.list_tasks,
                HttpRule("GET", f"/v2/{{parent={QUEUE}}}/tasks")),
            Rpc("GetTask", pb(cloudtasks.GetTaskRequest), self.get_task,
                HttpRule("GET", f"/v2/{{name={TASK}}}")),
            Rpc("CreateTask", pb(cloudtasks.CreateTaskRequest), self.create_task,
                HttpRule("POST", f"/v2/{{parent={QUEUE}}}/tasks", "*")),
            Rpc("DeleteTask", pb(cloudtasks.DeleteTaskRequest), self.delete_task,
                HttpRule("DELETE", f"/v2/{{name={TASK}}}")),
            Rpc("RunTask", pb(cloudtasks.RunTaskRequest), self.run_task,
                HttpRule("POST", f"/v2/{{name={TASK}}}:run", "*")),
            # Served, and refused with UNIMPLEMENTED, on both transports.
            Rpc("BatchCreateTasks", pb(cloudtasks.BatchCreateTasksRequest), refuse("BatchCreateTasks"),
                HttpRule("POST", f"/v2/{{parent={QUEUE}}}/tasks:batchCreate", "*")),
            Rpc("BatchDeleteTasks", pb(cloudtasks.BatchDeleteTasksRequest), refuse("BatchDeleteTasks"),
                HttpRule("POST", f"/v2/{{parent={QUEUE}}}/tasks:batchDelete", "*")),
            Rpc("GetCmekConfig", pb(cloudtasks.GetCmekConfigRequest), refuse("GetCmekConfig"),
                HttpRule("GET", "/v2/{name=projects/*/locations/*/cmekConfig}")),
            Rpc("UpdateCmekConfig", pb(cloudtasks.UpdateCmekConfigRequest), refuse("UpdateCmekConfig"),
                HttpRule("PATCH", "/v2/{cmek_config.name=projects/*/locations/*/cmekConfig}", "cmek_config")),
            Rpc("GetIamPolicy", iam_policy_pb2.GetIamPolicyRequest, refuse("GetIamPolicy"),
                HttpRule("POST", f"/v2/{{resource={QUEUE}}}:getIamPolicy", "*")),
            Rpc("SetIamPolicy", iam_policy_pb2.SetIamPolicyRequest, refuse("SetIamPolicy"),
                HttpRule("POST", f"/v2/{{resource={QUEUE}}}:setIamPolicy", "*")),
            Rpc("TestIamPermissions", iam_policy_pb2.TestIamPermissionsRequest, refuse("TestIamPermissions"),
                HttpRule("POST", f"/v2/{{resource={QUEUE}}}:testIamPermissions", "*")),
        ]

    # Each takes the raw request message and returns the raw response message.
    def create_queue(self, r: Any) -> Any:
        return self.engine.create_queue(r.parent, r.queue)

    def update_queue(self, r: Any) -> Any:
        return self.engine.update_queue(r.queue, r.update_mask)

    def get_queue(self, r: Any) -> Any:
        return self.engine.get_queue(r.name)

    def list_queues(self, r: Any) -> Any:
        queues, token = self.engine.list_queues(r.parent, r.filter, r.page_size, r.page_token)
        return cloudtasks.ListQueuesResponse.pb()(queues=queues, next_page_token=token)

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
        return cloudtasks.ListTasksResponse.pb()(tasks=tasks, next_page_token=token)

    def delete_task(self, r: Any) -> Any:
        self.engine.delete_task(r.name)
        return empty_pb2.Empty()

    def run_task(self, r: Any) -> Any:
        """Dispatches at once and answers before the target does (§10.5)."""
        _, state = self.engine.run_task(r.name, r.response_view)
        self.dispatcher.run_now(state)
        return self.engine.get_task(r.name, r.response_view)
