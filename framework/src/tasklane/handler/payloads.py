"""An action's payload type, and the one decoder every task body for that action goes through.

A payload type is a `msgspec.Struct` or a dataclass. Its fields are the task body's JSON object, decoded
and validated in one step, so an action receives a value that is already right or never runs.

Unknown fields are refused, whatever the type says: a misspelt field is a bug in the producer, and
dropping it silently would run the action without data the producer meant it to have. (A Struct
declared with `forbid_unknown_fields=True` is decoded in one pass; any other type has its field names
checked first.) Nested types follow their own settings, so declare nested Structs with
`forbid_unknown_fields=True` too.

Decoding is deterministic: a body refused once is refused on every retry, so each refusal makes the
task poison, and its message says what was wrong and what the type takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

import msgspec
import msgspec.inspect

T = TypeVar("T")

_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw])


class PayloadError(ValueError):
    """A body (or a producer's payload) that can never be this type; the message names the problem."""


TOO_DEEP = "body is not JSON this handler accepts: it is nested too deeply"


def check_utf8(body: bytes) -> None:
    """JSON is UTF-8 throughout, but msgspec checks only the strings it keeps."""
    try:
        body.decode()
    except UnicodeDecodeError as error:
        raise PayloadError(f"body is not JSON: it is not UTF-8 ({error.reason} at byte {error.start})") from None


def json_object_fields(body: bytes) -> dict[str, msgspec.Raw]:
    """The top-level fields of a JSON object body, each left undecoded, or PayloadError."""
    check_utf8(body)
    try:
        return _raw_object.decode(body)
    except msgspec.ValidationError as error:
        raise PayloadError(f"body is not a JSON object: {error}") from None
    except msgspec.DecodeError as error:
        raise PayloadError(f"body is not JSON: {error}") from None
    except RecursionError:
        raise PayloadError(TOO_DEEP) from None


def _is_payload_class(candidate: object) -> bool:
    return isinstance(candidate, type) and (issubclass(candidate, msgspec.Struct)
                                            or dataclasses.is_dataclass(candidate))


class PayloadType(Generic[T]):
    """How the bodies of one payload type are decoded, checked and described (its JSON schema)."""

    def __init__(self, cls: type[T]) -> None:
        if not _is_payload_class(cls):
            raise TypeError(f"a payload type must be a msgspec.Struct or a dataclass, got {cls!r}")
        info = msgspec.inspect.type_info(cls)
        if not isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DataclassType):
            raise TypeError(f"{cls.__name__} is not decoded from a JSON object")  # array_like Structs
        if isinstance(info, msgspec.inspect.StructType) and info.array_like:
            raise TypeError(f"{cls.__name__} is array_like; a task body is a JSON object")
        self.cls = cls
        self.name = cls.__name__
        self.fields: tuple[str, ...] = tuple(field.encode_name for field in info.fields)
        """The JSON names of its fields, in declaration order."""
        self.required: frozenset[str] = frozenset(field.encode_name for field in info.fields if field.required)
        self._checks_unknown_itself = isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields
        self._decoder = msgspec.json.Decoder(cls)

    @property
    def takes(self) -> str:
        """What a body of this type holds, for messages: `RefundPayment takes orderId (required), note`."""
        fields = ", ".join(f"{name} (required)" if name in self.required else name for name in self.fields)
        return f"{self.name} takes {fields or 'no fields'}"

    def decode(self, body: bytes) -> T:
        """The payload in `body` (JSON), or PayloadError saying why it can never be one."""
        if not self._checks_unknown_itself:
            self._refuse_unknown(json_object_fields(body))
        try:
            check_utf8(body)
            return self._decoder.decode(body)
        except msgspec.ValidationError as error:
            if self._checks_unknown_itself and str(error).startswith("Object contains unknown field"):
                self._name_every_unknown_field(body)
            raise PayloadError(f"invalid {self.name}: {error}; {self.takes}") from None
        except msgspec.DecodeError as error:
            raise PayloadError(f"body is not JSON: {error}") from None
        except RecursionError:
            raise PayloadError(TOO_DEEP) from None

    def _name_every_unknown_field(self, body: bytes) -> None:
        """msgspec names the first unknown field; name them all (the rest of the body may be invalid too)."""
        try:
            fields = _raw_object.decode(body)
        except (msgspec.MsgspecError, RecursionError):
            return
        self._refuse_unknown(fields)

    def _refuse_unknown(self, fields: dict[str, Any]) -> None:
        unknown = [name for name in fields if name not in self.fields]
        if unknown:
            named = ", ".join(f"`{name}`" for name in unknown)
            raise PayloadError(f"invalid {self.name}: unknown field{'s' if len(unknown) > 1 else ''} {named}; "
                               f"{self.takes}")

    def encode(self, payload: T) -> bytes:
        """`payload` as JSON, or PayloadError when it holds what JSON cannot (NaN is encoded as null)."""
        try:
            return msgspec.json.encode(payload)
        except (TypeError, ValueError, RecursionError, msgspec.MsgspecError) as error:
            raise PayloadError(f"{self.name} is not JSON-serialisable: {error}") from None


def payload_schemas(types: list[PayloadType[Any]],
                    ref_template: str = "#/components/schemas/{name}") -> tuple[list[str], dict[str, Any]]:
    """Each type's component name, and the components (the types and what they use), with unknown fields
    marked as refused at the top level, as decode refuses them."""
    refs, components = msgspec.json.schema_components([t.cls for t in types], ref_template=ref_template)
    names = [ref["$ref"].rsplit("/", 1)[1] for ref in refs]
    for name in names:
        components[name]["additionalProperties"] = False
    return names, components
