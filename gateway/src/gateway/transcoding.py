"""REST to gRPC message mapping: path variables, query parameters and the JSON body.

Follows the google.api.http rules as grpc-gateway applies them: the body (the whole request
for `body: "*"`, else one field) is parsed first, path variables then overwrite their fields,
and every other field may come from the query string (dotted for nested fields, repeated
by repeating the parameter). Query parameters naming a path or body field are ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from gateway.conditional import ETAG_FIELD, has_etag
from gateway.errors import invalid_argument
from gateway.rules import HttpBinding

# The field of a request that names it, so that it is carried out once (AIP-155).
REQUEST_ID_FIELD = "request_id"

UPDATE_MASK = "update_mask"
FIELD_MASK = "google.protobuf.FieldMask"
_INTEGER = re.compile(r"[+-]?\d{1,20}")
_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_STRING_MESSAGES = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})
# Messages a path segment or a query parameter can set, as in grpc-gateway.
TEXT_MESSAGES = _WRAPPERS | _STRING_MESSAGES | {FIELD_MASK}


@cache
def field_index(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by proto name and by lowerCamelCase JSON name."""
    index = {field.json_name: field for field in descriptor.fields}
    index.update(descriptor.fields_by_name)
    return index


def resolve_field_path(descriptor: Descriptor, path: Iterable[str]) -> list[FieldDescriptor]:
    """The fields along a dotted path; every step but the last must be a singular message."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = descriptor
    for name in path:
        if current is None:
            raise KeyError(name)
        field = field_index(current)[name]
        fields.append(field)
        singular_message = field.type == FieldDescriptor.TYPE_MESSAGE and not _is_repeated(field)
        current = field.message_type if singular_message else None
    return fields


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _parent_of(message: Message, fields: list[FieldDescriptor]) -> Message:
    for field in fields[:-1]:
        message = getattr(message, field.name)
    return message


class RequestBuilder:
    """Builds the request message of one binding from a REST request's parts."""

    def __init__(self, binding: HttpBinding) -> None:
        self.binding = binding
        self.request_class = GetMessageClass(binding.rpc.input_type)
        self.response_class = GetMessageClass(binding.rpc.output_type)
        descriptor = binding.rpc.input_type
        self.path_fields = {
            variable.name: resolve_field_path(descriptor, variable.field_path)
            for variable in binding.template.variables
        }
        for name, fields in self.path_fields.items():
            if _is_repeated(fields[-1]) or fields[-1].type == FieldDescriptor.TYPE_MESSAGE:
                raise ValueError(f"{binding.rpc.full_name}: path variable {name} is not a scalar")
        self.body_fields = (
            resolve_field_path(descriptor, binding.body.split("."))
            if binding.body not in ("", "*")
            else []
        )
        # Query parameters naming these (or fields inside them) are ignored.
        self._bound = {tuple(f.name for f in fields) for fields in self.path_fields.values()}
        if self.body_fields:
            self._bound.add(tuple(f.name for f in self.body_fields))
        mask = descriptor.fields_by_name.get(UPDATE_MASK)
        self.derives_update_mask = bool(
            self.body_fields
            and self.body_fields[-1].type == FieldDescriptor.TYPE_MESSAGE
            and not _is_repeated(self.body_fields[-1])
            and mask is not None
            and mask.message_type is not None
            and mask.message_type.full_name == FIELD_MASK
        )
        # where an If-Match header's entity tag goes: the etag of the resource in the body
        resource = self._body_resource(descriptor)
        self.takes_etag = resource is not None and has_etag(resource)
        # where an Idempotency-Key header goes: the request's own request_id (AIP-155)
        request_id = descriptor.fields_by_name.get(REQUEST_ID_FIELD)
        self.takes_request_id = (
            request_id is not None and request_id.type == FieldDescriptor.TYPE_STRING
        )

    def _body_resource(self, descriptor: Descriptor) -> Descriptor | None:
        if self.binding.body == "*":
            return descriptor
        last = self.body_fields[-1] if self.body_fields else None
        if last is None or last.type != FieldDescriptor.TYPE_MESSAGE or _is_repeated(last):
            return None
        return last.message_type

    def set_etag(self, request: Message, etag: str) -> None:
        """Make the request conditional on the resource's etag (AIP-154)."""
        resource = request
        for field in self.body_fields:
            resource = getattr(resource, field.name)
        given = getattr(resource, ETAG_FIELD)
        if given and given != etag:
            raise invalid_argument("the If-Match header and the etag of the body differ")
        setattr(resource, ETAG_FIELD, etag)

    def set_request_id(self, request: Message, key: str) -> None:
        """Name the request with an Idempotency-Key header's value: sent again with the same
        key, it is answered as the first time instead of being carried out twice."""
        if not key:
            raise invalid_argument("the Idempotency-Key header is empty")
        given = getattr(request, REQUEST_ID_FIELD)
        if given and given != key:
            raise invalid_argument("the Idempotency-Key header and the body's request_id differ")
        setattr(request, REQUEST_ID_FIELD, key)

    @property
    def has_body(self) -> bool:
        return self.binding.body != ""

    @property
    def reads_query(self) -> bool:
        return self.binding.body != "*"

    def build(
        self,
        *,
        path_params: Mapping[str, str],
        query: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Message:
        """The request message; malformed input raises a 400 ApiError."""
        request = self.request_class()
        data = self._parse_body(request, body) if self.has_body else None
        for name, value in path_params.items():
            fields = self.path_fields[name]
            _set_scalar(_parent_of(request, fields), fields[-1], [value], name)
        if self.reads_query:
            self._apply_query(request, query)
        if self.derives_update_mask and not request.HasField(UPDATE_MASK):
            body_message = self.body_fields[-1].message_type
            index = field_index(body_message)
            mask = getattr(request, UPDATE_MASK)
            mask.SetInParent()
            # an etag in the body is a condition (AIP-154), not a field to change
            named = (index[key].name for key in (data or {}))
            mask.paths.extend(name for name in named if name != ETAG_FIELD)
        return request

    def _parse_body(self, request: Message, body: bytes) -> Any:
        data = decode_json(body) if body.strip() else {}
        if self.binding.body == "*":
            target, field = request, None
        else:
            target, field = _parent_of(request, self.body_fields), self.body_fields[-1]
        wants_object = field is None or (
            field.type == FieldDescriptor.TYPE_MESSAGE and not _is_repeated(field)
        )
        if wants_object and not isinstance(data, dict):
            raise invalid_argument("the request body must be a JSON object")
        try:
            if field is None:
                json_format.ParseDict(data, target)
            elif wants_object:
                json_format.ParseDict(data, getattr(target, field.name))
            else:
                json_format.ParseDict({field.name: data}, target)
        except (json_format.ParseError, ValueError, TypeError, AttributeError) as error:
            # the message the parser's field names are in
            body_type = (
                field.message_type if field is not None and wants_object else target.DESCRIPTOR
            )
            raise invalid_argument(
                f"invalid request body: {body_complaint(str(error), body_type)}"
            ) from None
        except RecursionError:
            raise invalid_argument("the request body is nested too deeply") from None
        return data

    def _apply_query(self, request: Message, query: Iterable[tuple[str, str]]) -> None:
        grouped: dict[str, list[str]] = {}
        for key, value in query:
            grouped.setdefault(key, []).append(value)
        descriptor = request.DESCRIPTOR
        for key, values in grouped.items():
            try:
                fields = resolve_field_path(descriptor, key.split("."))
            except KeyError:
                raise invalid_argument(f"unknown query parameter {key!r}") from None
            names = tuple(f.name for f in fields)
            if any(names[: len(bound)] == bound for bound in self._bound):
                continue
            _set_scalar(_parent_of(request, fields), fields[-1], values, key)


def decode_json(body: bytes) -> Any:
    """JSON from a request body; anything that is not JSON is a 400."""
    try:
        data = json.loads(body)
        # JSON can spell a lone surrogate (\ud800 alone), which no UTF-8 text holds: protobuf
        # would fail on it as a field name, and so would any answer that quoted it
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise invalid_argument("the request body is nested too deeply") from None
    except UnicodeEncodeError:
        raise invalid_argument(
            "the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
        ) from None
    except ValueError:
        raise invalid_argument("the request body is not valid JSON") from None
    return data


def _set_scalar(parent: Message, field: FieldDescriptor, values: list[str], name: str) -> None:
    """Set a field from text (a path segment or query values)."""
    if not _is_repeated(field) and len(values) > 1:
        raise invalid_argument(f"{name} takes a single value")
    try:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_repeated(field):
                raise ValueError("repeated messages")
            _set_message_from_text(getattr(parent, field.name), values[0])
        elif _is_repeated(field):
            getattr(parent, field.name).extend(_scalar(field, v) for v in values)
        else:
            setattr(parent, field.name, _scalar(field, values[0]))
    except (ValueError, TypeError, OverflowError, json_format.ParseError):
        raise invalid_argument(f"invalid value for {name}") from None


def _set_message_from_text(message: Message, text: str) -> None:
    full_name = message.DESCRIPTOR.full_name
    if full_name == FIELD_MASK:
        # Both "price_cents" and "priceCents" name a path, as in a JSON body.
        message.SetInParent()
        paths = (_camel_case(_snake_case(p.strip())) for p in text.split(",") if p.strip())
        json_format.ParseDict(",".join(paths), message)
    elif full_name in _STRING_MESSAGES:
        json_format.ParseDict(text, message)
    elif full_name in _WRAPPERS:
        inner = message.DESCRIPTOR.fields_by_name["value"]
        textual = inner.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
        json_format.ParseDict(text if textual else _scalar(inner, text), message)
    else:
        raise ValueError(f"{full_name} cannot be set from text")


def _snake_case(path: str) -> str:
    return ".".join(re.sub(r"(?<!^)([A-Z])", r"_\1", part).lower() for part in path.split("."))


def _camel_case(path: str) -> str:
    return ".".join(
        re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for p in path.split(".")
    )


def _scalar(field: FieldDescriptor, text: str) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text
    if kind in _INT_TYPES:
        if not _INTEGER.fullmatch(text):
            raise ValueError("not an integer")
        return int(text)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float(text)
    if kind == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in ("true", "1", "t"):
            return True
        if lowered in ("false", "0", "f"):
            return False
        raise ValueError("not a boolean")
    if kind == FieldDescriptor.TYPE_ENUM:
        value = field.enum_type.values_by_name.get(text)
        if value is not None:
            return value.number
        if _INTEGER.fullmatch(text):
            return int(text)
        raise ValueError("not an enum value")
    if kind == FieldDescriptor.TYPE_BYTES:
        try:
            return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "==")
        except binascii.Error:
            raise ValueError("not base64") from None
    raise ValueError(f"unsupported field type {kind}")


def response_json(message: Message) -> dict[str, Any]:
    """A response message as the REST JSON: proto field names, unset fields included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


_FIELD_FAILED = re.compile(r"Failed to parse (\w+) field")
_NO_SUCH_FIELD = re.compile(r'has no field named "([^"]{1,100})"')
_EXPECTED = {
    FieldDescriptor.CPPTYPE_INT32: "an integer",
    FieldDescriptor.CPPTYPE_INT64: "an integer",
    FieldDescriptor.CPPTYPE_UINT32: "a non-negative integer",
    FieldDescriptor.CPPTYPE_UINT64: "a non-negative integer",
    FieldDescriptor.CPPTYPE_DOUBLE: "a number",
    FieldDescriptor.CPPTYPE_FLOAT: "a number",
    FieldDescriptor.CPPTYPE_BOOL: "true or false",
    FieldDescriptor.CPPTYPE_STRING: "a string",
    FieldDescriptor.CPPTYPE_ENUM: "one of its enum names",
    FieldDescriptor.CPPTYPE_MESSAGE: "an object",
}


def body_complaint(parser_error: str, message: Descriptor | None) -> str:
    """What was wrong with a request body, in the API's terms: the field (a dotted path into
    the body) and what it takes, or the unknown field's name; never the JSON parser's own
    words (Python's exception texts, the message's type names, its list of fields)."""
    if unknown := _NO_SUCH_FIELD.search(parser_error):
        return f'unknown field "{unknown[1]}"'
    path = _FIELD_FAILED.findall(parser_error)
    if not path:
        return "a value does not fit its field"
    where = ".".join(path)
    field = None
    for name in path:
        field = message.fields_by_name.get(name) if message is not None else None
        if field is None:
            return f"field {where} has a value that does not fit it"
        message = field.message_type
    assert field is not None  # path is not empty
    if message is not None and message.full_name == "google.protobuf.Timestamp":
        expected = "an RFC 3339 timestamp (2026-01-31T12:00:00Z)"
    else:
        expected = _EXPECTED.get(field.cpp_type, "another value")
    if "out of range" in parser_error:
        expected += " in range"
    if _is_repeated(field):
        return f"field {where} takes a list, each {expected}"
    return f"field {where} takes {expected}"
