"""JSON Schemas of proto messages (proto3 JSON mapping, proto field names), with the
comments of the .proto files as descriptions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

SCHEMA_REF = "#/components/schemas/"

# FileDescriptorProto / DescriptorProto / EnumDescriptorProto / ServiceDescriptorProto field
# numbers, as used in SourceCodeInfo.Location.path.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # 64-bit integers are JSON strings in the proto3 JSON mapping.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths, e.g. `name,price_cents`.",
    },
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
    },
    **{
        f"google.protobuf.{name}Value": _SCALARS[kind]
        for name, kind in (
            ("Double", FieldDescriptor.TYPE_DOUBLE),
            ("Float", FieldDescriptor.TYPE_FLOAT),
            ("Int64", FieldDescriptor.TYPE_INT64),
            ("UInt64", FieldDescriptor.TYPE_UINT64),
            ("Int32", FieldDescriptor.TYPE_INT32),
            ("UInt32", FieldDescriptor.TYPE_UINT32),
            ("Bool", FieldDescriptor.TYPE_BOOL),
            ("String", FieldDescriptor.TYPE_STRING),
            ("Bytes", FieldDescriptor.TYPE_BYTES),
        )
    },
}


class Comments:
    """Leading comments of services, methods, messages, fields and enums, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self._by_name: dict[str, str] = {}
        for file in files.file:
            located = {
                tuple(loc.path): (loc.leading_comments or loc.trailing_comments)
                for loc in file.source_code_info.location
            }
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._message(located, prefix + message.name, message, (_FILE_MESSAGE, i))
            for i, enum in enumerate(file.enum_type):
                self._enum(located, prefix + enum.name, enum, (_FILE_ENUM, i))
            for i, service in enumerate(file.service):
                self._add(located, prefix + service.name, (_FILE_SERVICE, i))
                for j, method in enumerate(service.method):
                    name = f"{prefix}{service.name}.{method.name}"
                    self._add(located, name, (_FILE_SERVICE, i, _SERVICE_METHOD, j))

    def get(self, full_name: str) -> str | None:
        return self._by_name.get(full_name)

    def _add(self, located: dict[tuple[int, ...], str], name: str, path: tuple[int, ...]) -> None:
        text = "\n".join(line.strip() for line in located.get(path, "").strip().splitlines())
        if text:
            self._by_name[name] = text

    def _message(
        self,
        located: dict[tuple[int, ...], str],
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        self._add(located, name, path)
        for i, field in enumerate(message.field):
            self._add(located, f"{name}.{field.name}", (*path, _MESSAGE_FIELD, i))
        for i, nested in enumerate(message.nested_type):
            self._message(located, f"{name}.{nested.name}", nested, (*path, _MESSAGE_NESTED, i))
        for i, enum in enumerate(message.enum_type):
            self._enum(located, f"{name}.{enum.name}", enum, (*path, _MESSAGE_ENUM, i))

    def _enum(
        self,
        located: dict[tuple[int, ...], str],
        name: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
    ) -> None:
        self._add(located, name, path)
        for i, value in enumerate(enum.value):
            self._add(located, f"{name}.{value.name}", (*path, _ENUM_VALUE, i))


def field_behaviors(field: FieldDescriptor) -> set[int]:
    """The google.api.field_behavior values of a field."""
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def is_required(field: FieldDescriptor) -> bool:
    return field_behavior_pb2.REQUIRED in field_behaviors(field)


class SchemaRegistry:
    """The components.schemas of a document: every message and enum a schema refers to."""

    def __init__(self, comments: Comments) -> None:
        self.comments = comments
        self.components: dict[str, dict[str, Any]] = {}

    def message_ref(self, descriptor: Descriptor) -> dict[str, Any]:
        """A reference to a message's schema (or the inline schema of a well-known type)."""
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        if descriptor.full_name not in self.components:
            self.components[descriptor.full_name] = {}  # placeholder: messages may recurse
            self.components[descriptor.full_name] = self.message_schema(descriptor)
        return {"$ref": SCHEMA_REF + descriptor.full_name}

    def message_schema(
        self, descriptor: Descriptor, *, exclude: Iterable[str] = ()
    ) -> dict[str, Any]:
        """An object schema of a message, without the fields named in `exclude`."""
        if descriptor.full_name == "google.protobuf.Empty":
            return {"type": "object", "description": "An empty JSON object."}
        left_out = set(exclude)
        fields = [f for f in descriptor.fields if f.name not in left_out]
        schema: dict[str, Any] = {"type": "object"}
        if description := self.comments.get(descriptor.full_name):
            schema["description"] = description
        schema["properties"] = {field.name: self.field_schema(field) for field in fields}
        if required := [field.name for field in fields if is_required(field)]:
            schema["required"] = required
        return schema

    def field_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        """The schema of one field's JSON value, with its description and behaviour."""
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {
                "type": "object",
                "additionalProperties": self.value_schema(value),
            }
        elif field.is_repeated:
            schema = {"type": "array", "items": self.value_schema(field)}
        else:
            schema = self.value_schema(field)
        if description := self.comments.get(field.full_name):
            schema["description"] = description
        behaviors = field_behaviors(field)
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            schema["writeOnly"] = True
        return schema

    def value_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        """The schema of a single value of a field (one element if the field is repeated)."""
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return self.message_ref(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return self.enum_ref(field.enum_type)
        return dict(_SCALARS[field.type])

    def enum_ref(self, descriptor: EnumDescriptor) -> dict[str, Any]:
        """A reference to an enum's schema: a string enum of its value names."""
        if descriptor.full_name not in self.components:
            schema: dict[str, Any] = {
                "type": "string",
                "enum": [value.name for value in descriptor.values],
            }
            lines = [self.comments.get(descriptor.full_name) or ""]
            for value in descriptor.values:
                if comment := self.comments.get(f"{descriptor.full_name}.{value.name}"):
                    lines.append(f"- `{value.name}`: {comment}")
            if description := "\n".join(line for line in lines if line):
                schema["description"] = description
            self.components[descriptor.full_name] = schema
        return {"$ref": SCHEMA_REF + descriptor.full_name}
