"""The errors the emulator answers with: the real service's gRPC codes and messages, word for word.

Messages are from ../shared/reference/real-cloud-tasks/errors.json (recorded from Google Cloud Tasks);
tests/emulator/test_conformance.py replays every case there against these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

MAX_MESSAGE_BYTES = 1024
"""A message longer than this (UTF-8) is cut, with "…": some echo what the client sent (a task name of 6,000
characters), and gRPC carries the message twice in its trailers (grpc-message, percent-encoded, and
grpc-status-details-bin), past the client's 8 KiB metadata limit. The client then raised RESOURCE_EXHAUSTED, or a
bare ValueError, where REST answered INVALID_ARGUMENT."""


@dataclass
class ApiError(Exception):
    code: grpc.StatusCode
    message: str
    details: list[any_pb2.Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        encoded = self.message.encode()
        if len(encoded) > MAX_MESSAGE_BYTES:
            self.message = encoded[:MAX_MESSAGE_BYTES - 3].decode(errors="ignore") + "…"

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def _packed(*messages: object) -> list[any_pb2.Any]:
    packed = []
    for message in messages:
        container = any_pb2.Any()
        container.Pack(message)  # type: ignore[arg-type]
        packed.append(container)
    return packed


def _help(description: str, url: str) -> error_details_pb2.Help:
    return error_details_pb2.Help(links=[error_details_pb2.Help.Link(description=description, url=url)])


QUEUE_NOT_FOUND = ("Queue does not exist. If you just created the queue, wait at least a minute for the "
                   "queue to initialize.")


def queue_not_found() -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, QUEUE_NOT_FOUND)


def entity_not_found() -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, "Requested entity was not found.")


def task_recently_deleted() -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, "The task no longer exists, though a task with this name existed "
                                               "recently. The task either successfully completed or was deleted.")


def queue_already_exists() -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, "Queue already exists")


def task_already_exists() -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")


def queue_recently_deleted() -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION,
                    "The queue cannot be created because a queue with this name existed too recently.")


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def invalid_queue_name() -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                    'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".',
                    _packed(_help("Definition of queue name", "https://cloud.google.com/tasks/docs/reference/rest/v2/"
                                  "projects.locations.queues#Queue.FIELDS.name")))


def invalid_task_id(task_id: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                    f'Task ID "{task_id}" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or '
                    "underscores (_). Task ID must between 1 and 500 characters.",
                    _packed(_help("Definition of task ID", "https://cloud.google.com/tasks/docs/reference/rest/v2/"
                                  "projects.locations.queues.tasks#Task.FIELDS.name")))


def invalid_parent(parent: str) -> ApiError:
    """What the service answers for a parent that is not projects/P/locations/L: it reads it as a project."""
    message = f"Permission denied on resource project {parent}."
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, _packed(
        error_details_pb2.ErrorInfo(reason="CONSUMER_INVALID", domain="googleapis.com", metadata={
            "consumer": f"projects/{parent}", "containerInfo": parent, "service": "cloudtasks.googleapis.com"}),
        error_details_pb2.LocalizedMessage(locale="en-US", message=message),
        _help("Google developers console", "https://console.developers.google.com"),
    ))


def unimplemented(method: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by the Tasklane emulator.")


def storage_failed(reason: str, full: bool) -> ApiError:
    """A write to the state file failed and nothing was changed: RESOURCE_EXHAUSTED when the disk is full
    (gRPC's code for an exhausted file system), else UNAVAILABLE; both are worth retrying later."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
    return ApiError(code, f"The emulator could not save the change, and made none: {reason}. "
                          "Free disk space (or fix the state file) and retry.")


# The HTTP status Google's REST front end answers with for each code (google/rpc/code.proto, "HTTP Mapping").
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def bad_request(description: str, field: str = "") -> ApiError:
    """A request the REST front end cannot turn into the RPC's message, with the google.rpc.BadRequest
    detail Google attaches (`field` is left out for the request's top level, as Google does)."""
    violation = error_details_pb2.BadRequest.FieldViolation(description=description, field=field)
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, description,
                    _packed(error_details_pb2.BadRequest(field_violations=[violation])))
