"""Generated Python stubs of tienda's proto contracts (see proto/ and `make proto`).

The stubs live in the packages named after the proto packages (`auth.v1`, `product.v1`,
`order.v1`); this package holds the descriptor set with comments and what lists them.
"""

from __future__ import annotations

from importlib import import_module
from importlib.resources import files
from types import ModuleType

from google.protobuf import descriptor_pb2

# Proto modules that define the public services, in start-up order.
SERVICE_MODULES = ("auth.v1.auth_pb2", "product.v1.product_pb2", "order.v1.order_pb2")


def service_modules() -> list[ModuleType]:
    """Import and return the generated modules that define tienda's services."""
    return [import_module(name) for name in SERVICE_MODULES]


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every proto file with its imports and source comments."""
    data = files(__package__).joinpath("tienda.binpb").read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)
