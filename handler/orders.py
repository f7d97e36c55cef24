"""The payload of the sample order actions: `POST /tasks/<action>` takes it as the whole body, and the
tutorial's `POST /process-order` beside `action` and an optional `idempotencyKey`."""

from __future__ import annotations

from typing import Annotated

import msgspec

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class OrderRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`{"orderId": str, "customerEmail": str?}`."""

    order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="The order to act on.")]
    customer_email: Annotated[str, msgspec.Meta(pattern=EMAIL_PATTERN, max_length=254)] | None = None
