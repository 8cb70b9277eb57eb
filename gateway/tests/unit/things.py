"""A synthetic contract, `gwtest.v1.ThingService`, with every kind of field and http rule the
real contracts do not (yet) use: nested and `**` variables, additional and custom bindings,
enums, bools, bytes, wrappers, timestamps and repeated fields."""

from __future__ import annotations

from functools import cache

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    field_mask_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import ServiceDescriptor

F = descriptor_pb2.FieldDescriptorProto
PACKAGE = "gwtest.v1"


def _field(
    name: str,
    number: int,
    kind: int,
    *,
    type_name: str = "",
    repeated: bool = False,
    behavior: int | None = None,
) -> F:
    field = F(
        name=name,
        number=number,
        type=kind,  # type: ignore[arg-type]
        label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
    )
    if type_name:
        field.type_name = type_name
    if behavior is not None:
        field.options.Extensions[field_behavior_pb2.field_behavior].append(behavior)  # type: ignore[arg-type]
    return field


def _rule(**pattern: str) -> http_pb2.HttpRule:
    return http_pb2.HttpRule(**pattern)  # type: ignore[arg-type]


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="gwtest/v1/things.proto",
        package=PACKAGE,
        syntax="proto3",
        dependency=[
            "google/protobuf/timestamp.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/field_mask.proto",
        ],
    )
    file.enum_type.add(name="Color").value.extend(
        [
            descriptor_pb2.EnumValueDescriptorProto(name="COLOR_UNSPECIFIED", number=0),
            descriptor_pb2.EnumValueDescriptorProto(name="COLOR_RED", number=1),
        ]
    )
    shelf = file.message_type.add(name="Shelf")
    shelf.field.extend([_field("name", 1, F.TYPE_STRING), _field("size", 2, F.TYPE_INT64)])
    thing = file.message_type.add(name="Thing")
    thing.field.extend(
        [
            _field("id", 1, F.TYPE_STRING, behavior=field_behavior_pb2.REQUIRED),
            _field("flag", 2, F.TYPE_BOOL),
            _field("color", 3, F.TYPE_ENUM, type_name=f".{PACKAGE}.Color"),
            _field("data", 4, F.TYPE_BYTES),
            _field("tags", 5, F.TYPE_STRING, repeated=True),
            _field("shelf", 6, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Shelf"),
            _field("when", 7, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"),
            _field("count", 8, F.TYPE_MESSAGE, type_name=".google.protobuf.Int32Value"),
            _field("ratio", 9, F.TYPE_DOUBLE),
            _field("shelves", 10, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Shelf", repeated=True),
            _field("small", 11, F.TYPE_INT32),
            _field("update_mask", 12, F.TYPE_MESSAGE, type_name=".google.protobuf.FieldMask"),
            _field(
                "created",
                13,
                F.TYPE_MESSAGE,
                type_name=".google.protobuf.Timestamp",
                behavior=field_behavior_pb2.OUTPUT_ONLY,
            ),
        ]
    )
    update = file.message_type.add(name="UpdateThingRequest")
    update.field.extend(
        [
            _field("thing", 1, F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Thing"),
            _field("update_mask", 2, F.TYPE_MESSAGE, type_name=".google.protobuf.FieldMask"),
        ]
    )
    service = file.service.add(name="ThingService")
    thing_type = f".{PACKAGE}.Thing"
    methods = [
        ("GetThing", thing_type, _rule(get="/v1/{shelf.name=shelves/*}/things/{id}")),
        ("ListThings", thing_type, _rule(get="/v1/things")),
        ("CreateThing", thing_type, _rule(post="/v1/things", body="*")),
        ("GetFile", thing_type, _rule(get="/v1/files/{id=**}")),
        ("ArchiveThing", thing_type, _rule(post="/v1/things/{id}:archive", body="*")),
        (
            "UpdateThing",
            f".{PACKAGE}.UpdateThingRequest",
            _rule(patch="/v1/things/{thing.id}", body="thing"),
        ),
        ("Internal", thing_type, None),
    ]
    for name, input_type, rule in methods:
        method = service.method.add(name=name, input_type=input_type, output_type=thing_type)
        if rule is not None:
            method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    listing = service.method[1].options.Extensions[annotations_pb2.http]
    listing.additional_bindings.add(get="/v1/shelves/{shelf.name}/things")
    custom = service.method.add(name="Search", input_type=thing_type, output_type=thing_type)
    custom.options.Extensions[annotations_pb2.http].custom.kind = "SEARCH"
    custom.options.Extensions[annotations_pb2.http].custom.path = "/v1/things:search"
    return file


@cache
def thing_service() -> ServiceDescriptor:
    """gwtest.v1.ThingService, in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, wrappers_pb2, field_mask_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    pool.Add(_file())
    return pool.FindServiceByName(f"{PACKAGE}.ThingService")
