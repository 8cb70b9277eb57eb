"""The google.api.http rules of the contracts' services: the only source of REST routes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import tienda_contracts
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from gateway.templates import PathTemplate, parse_template

_VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class HttpBinding:
    """One REST route of one RPC: HTTP method, path template and where the body goes."""

    service: ServiceDescriptor
    rpc: MethodDescriptor
    http_method: str
    template: PathTemplate
    body: str  # "" (no body), "*" (the whole request) or a request field path

    @property
    def full_rpc_name(self) -> str:
        return f"{self.service.full_name}.{self.rpc.name}"


def contract_services() -> list[ServiceDescriptor]:
    """Every service of tienda's contracts."""
    return [
        service
        for module in tienda_contracts.service_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
    ]


def http_bindings(services: Iterable[ServiceDescriptor]) -> list[HttpBinding]:
    """The bindings of every annotated RPC (additional bindings included); others have none."""
    found: list[HttpBinding] = []
    for service in services:
        for rpc in service.methods:
            options = rpc.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            rule = options.Extensions[annotations_pb2.http]
            found.extend(_bindings(service, rpc, rule))
    return found


def _bindings(
    service: ServiceDescriptor, rpc: MethodDescriptor, rule: http_pb2.HttpRule
) -> Iterator[HttpBinding]:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return
    if rule.response_body:
        raise ValueError(f"{rpc.full_name}: response_body is not supported by this gateway")
    if pattern == "custom":
        method, path = rule.custom.kind.upper(), rule.custom.path
    elif pattern in _VERBS:
        method, path = pattern.upper(), getattr(rule, pattern)
    else:
        raise ValueError(f"{rpc.full_name}: unknown http pattern {pattern}")
    yield HttpBinding(service, rpc, method, parse_template(path), rule.body)
    for extra in rule.additional_bindings:
        yield from _bindings(service, rpc, extra)
