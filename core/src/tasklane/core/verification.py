"""The names `make verify` and the handler agree on: the smoke task's action, and the log event proving it ran."""

VERIFY_ACTION = "verify_delivery"
VERIFIED_EVENT = "delivery_verified"
