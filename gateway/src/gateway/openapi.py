"""The OpenAPI 3.1 document, generated from the same google.api.http rules as the routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tienda_platform.proto_schemas import SCHEMA_REF, Comments, SchemaRegistry, is_required

from gateway import __version__
from gateway.conditional import has_etag
from gateway.rules import HttpBinding
from gateway.transcoding import TEXT_MESSAGES, RequestBuilder, resolve_field_path

# RPCs callable without a bearer token. The contracts carry no annotation for this; the
# services' own public_methods sets are the authority, and this list documents them.
PUBLIC_RPCS = frozenset(
    {
        "auth.v1.AuthService.Register",
        "auth.v1.AuthService.Login",
        "auth.v1.AuthService.RefreshToken",
        "auth.v1.AuthService.GetJwks",
        "product.v1.ProductService.GetProduct",
        "product.v1.ProductService.ListProducts",
    }
)
BEARER = "bearerAuth"
ERROR_SCHEMA = "Error"
_QUERY_DEPTH = 3
# Methods an OpenAPI 3.1 path item can hold; a rule with another custom kind is served but
# cannot be described.
_OPENAPI_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "Every error: the gRPC status code number, a safe message and details.",
    "required": ["code", "message", "details"],
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "gRPC status code."},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "description": "google.rpc error details, e.g. google.rpc.BadRequest.",
            "items": {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": True,
            },
        },
    },
}


def build_document(
    bindings: Sequence[HttpBinding],
    comments: Comments,
    *,
    extra_paths: Sequence[tuple[str, str, Any]] = (),
) -> dict[str, Any]:
    """The OpenAPI document of these bindings, plus hand-written operations
    (path, method, a function of the SchemaRegistry that returns the operation)."""
    schemas = SchemaRegistry(comments)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for binding in bindings:
        if binding.http_method.lower() not in _OPENAPI_METHODS:
            continue
        operation = _operation(binding, schemas, comments)
        base_id = operation["operationId"]
        suffix = 2
        while operation["operationId"] in operation_ids:
            operation["operationId"] = f"{base_id}{suffix}"
            suffix += 1
        operation_ids.add(operation["operationId"])
        paths.setdefault(binding.template.openapi_path(), {})[binding.http_method.lower()] = (
            operation
        )
    for path, method, describe in extra_paths:
        paths.setdefault(path, {})[method] = describe(schemas)
    services = {b.service.full_name: b.service for b in bindings}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tienda REST API",
            "version": __version__,
            "description": (
                "REST/JSON transcoding of tienda's gRPC services. Responses use the proto "
                "field names; requests accept them and lowerCamelCase. 64-bit integers are "
                "JSON strings (proto3 JSON mapping)."
            ),
        },
        "tags": [
            {"name": service.name, "description": comments.get(name) or service.name}
            for name, service in services.items()
        ],
        "paths": paths,
        "components": {
            "schemas": {**schemas.components, ERROR_SCHEMA: _ERROR},
            "securitySchemes": {
                BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": [{BEARER: []}],
    }


def json_content(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    """An OpenAPI response object with a JSON body of this schema."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR_RESPONSE = json_content({"$ref": SCHEMA_REF + ERROR_SCHEMA}, "An error.")


def _operation(binding: HttpBinding, schemas: SchemaRegistry, comments: Comments) -> dict[str, Any]:
    rpc = binding.rpc
    description = comments.get(rpc.full_name) or rpc.name
    operation: dict[str, Any] = {
        "operationId": rpc.name,
        "summary": description.split(". ")[0].rstrip(".\n"),
        "description": description,
        "tags": [binding.service.name],
    }
    parameters = _path_parameters(binding, schemas)
    if binding.body != "*":
        bound = {v.field_path for v in binding.template.variables}
        if binding.body:
            bound.add(tuple(binding.body.split(".")))
        parameters += _query_parameters(rpc.input_type, schemas, bound, prefix=(), depth=0)
    if parameters:
        operation["parameters"] = parameters
    if binding.body:
        schema = _body_schema(binding, schemas)
        operation["requestBody"] = {
            # An empty object may be left out (CancelOrder): an empty body reads as {}.
            "required": schema.get("properties") != {},
            "content": {"application/json": {"schema": schema}},
        }
    operation["responses"] = {
        "200": json_content(schemas.message_ref(rpc.output_type)),
        "default": ERROR_RESPONSE,
    }
    if has_etag(rpc.output_type):
        _conditional(binding, operation)
    if binding.http_method != "GET" and RequestBuilder(binding).takes_request_id:
        operation.setdefault("parameters", []).append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A key of the client's choosing (a UUID is best; 1 to 64 letters,"
                " digits or -_.:) that names this request, as its request_id does: sent again"
                " with the same key, the request is answered as the first time and not carried"
                " out twice; another request under a key used before is 409.",
                "schema": {"type": "string", "maxLength": 64},
            }
        )
    if binding.full_rpc_name in PUBLIC_RPCS:
        operation["security"] = []
    return operation


def _conditional(binding: HttpBinding, operation: dict[str, Any]) -> None:
    """The ETag header of a resource with an etag, and the conditions on it that the
    gateway evaluates (gateway.conditional)."""
    responses = operation["responses"]
    responses["200"]["headers"] = {
        "ETag": {"description": "The resource's entity tag.", "schema": {"type": "string"}}
    }
    if binding.http_method == "GET":
        headers = {
            "If-None-Match": "304 Not Modified, with no body, if the resource has one of these"
            " entity tags.",
            "If-Match": "412 Precondition Failed unless the resource has one of these entity tags.",
        }
        responses["304"] = {"description": "Not modified: the resource is as the client has it."}
    elif RequestBuilder(binding).takes_etag:
        headers = {
            "If-Match": "The change is made only if the resource still has this entity tag"
            " (its ETag when read); 412 Precondition Failed otherwise.",
        }
    else:
        return
    responses["412"] = json_content(
        {"$ref": SCHEMA_REF + ERROR_SCHEMA}, "The entity tag of If-Match is not the resource's."
    )
    operation.setdefault("parameters", []).extend(
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in headers.items()
    )


def _path_parameters(binding: HttpBinding, schemas: SchemaRegistry) -> list[dict[str, Any]]:
    parameters = []
    for variable in binding.template.variables:
        field = resolve_field_path(binding.rpc.input_type, variable.field_path)[-1]
        parameters.append(
            {
                "name": variable.name,
                "in": "path",
                "required": True,
                "schema": schemas.field_schema(field),
            }
        )
    return parameters


def _query_parameters(
    message: Descriptor,
    schemas: SchemaRegistry,
    bound: set[tuple[str, ...]],
    *,
    prefix: tuple[str, ...],
    depth: int,
) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for field in message.fields:
        path = (*prefix, field.name)
        role = _query_role(field)
        if path in bound or role == "none":
            continue
        if role == "nested":
            if depth < _QUERY_DEPTH:
                parameters += _query_parameters(
                    field.message_type, schemas, bound, prefix=path, depth=depth + 1
                )
            continue
        parameter: dict[str, Any] = {
            "name": ".".join(path),
            "in": "query",
            "schema": schemas.field_schema(field),
        }
        if field.is_repeated:
            parameter.update(style="form", explode=True)
        if is_required(field) and not prefix:
            parameter["required"] = True
        parameters.append(parameter)
    return parameters


def _query_role(field: FieldDescriptor) -> str:
    """How a field shows in a query string: "leaf", "nested" (its own fields do) or "none"."""
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return "leaf"
    name = field.message_type.full_name
    if field.is_repeated:
        return "none"
    if name in TEXT_MESSAGES:
        return "leaf"
    return "none" if name.startswith("google.protobuf.") else "nested"


def _body_schema(binding: HttpBinding, schemas: SchemaRegistry) -> dict[str, Any]:
    message = binding.rpc.input_type
    if binding.body != "*":
        return schemas.field_schema(resolve_field_path(message, binding.body.split("."))[-1])
    in_path = {v.field_path[0] for v in binding.template.variables if len(v.field_path) == 1}
    if not in_path:
        return schemas.message_ref(message)
    return schemas.message_schema(message, exclude=in_path)
