"""The body of a /process-order task, decoded and validated in one step."""

from __future__ import annotations

from typing import Annotated

import msgspec

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class OrderRequest(msgspec.Struct, frozen=True, rename="camel"):
    """`{"orderId": str, "action": str, "customerEmail": str?, "idempotencyKey": str?}`."""

    order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="The order to act on.")]
    action: Annotated[str, msgspec.Meta(min_length=1, max_length=100, description="Name of a registered action.")]
    customer_email: Annotated[str, msgspec.Meta(pattern=EMAIL_PATTERN, max_length=254)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(
        min_length=1, max_length=500,
        description="Runs the action at most once per key; defaults to the Cloud Tasks task name.")] | None = None


_decoder = msgspec.json.Decoder(OrderRequest)


def decode_order(body: bytes) -> OrderRequest | str:
    """The order, or the reason the body can never be one (for the rejection and the dead letter).

    Decoding is deterministic, so a body refused once is refused on every retry: each refusal here
    makes the task poison. Anything else the decoder raises is a bug, and propagates as one.
    """
    try:
        body.decode()  # JSON is UTF-8 throughout, but msgspec checks only the strings it keeps
        return _decoder.decode(body)
    except UnicodeDecodeError as error:
        return f"body is not JSON: it is not UTF-8 ({error.reason} at byte {error.start})"
    except msgspec.ValidationError as error:
        return f"invalid order: {error}"
    except msgspec.DecodeError as error:
        return f"body is not JSON: {error}"
    except RecursionError:
        return "body is not JSON this handler accepts: it is nested too deeply"
