"""Conditional requests (RFC 9110, section 13) for resources with an `etag` field (AIP-154).

- An answer whose message has an etag carries it as the `ETag` header.
- `If-Match` on a change sends the entity tag to the service as the etag of the resource in
  the body, and the service refuses the change (ABORTED) if the resource no longer has it:
  412 Precondition Failed. Weak tags never match (If-Match compares strongly); `*` asks only
  that the resource exists, which the change checks anyway. A change to a resource without
  entity tags cannot meet the condition: 412 too, rather than a change the client did not
  mean to make unconditionally.
- `If-Match` on a read is checked against the answer (412 if it has another etag);
  `If-None-Match` on a read that matches (weakly) gives 304 Not Modified with no body.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.errors import ApiError

ETAG_FIELD = "etag"
# RFC 9110: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
MAX_HEADER_CHARS = 1024


def has_etag(descriptor: Descriptor) -> bool:
    """Whether messages of this type carry an etag (a string field named etag)."""
    field = descriptor.fields_by_name.get(ETAG_FIELD)
    return field is not None and field.type == FieldDescriptor.TYPE_STRING


def etag_of(message: Message) -> str:
    """The message's own etag field ("" when it has none)."""
    return str(getattr(message, ETAG_FIELD)) if has_etag(message.DESCRIPTOR) else ""


def entity_tag(etag: str) -> str:
    """The ETag header value of an etag (a strong entity tag)."""
    return f'"{etag}"'


class Condition:
    """The parsed If-Match or If-None-Match header: any (`*`) or a list of entity tags,
    each (weak, opaque tag)."""

    def __init__(self, header: str, name: str) -> None:
        self.name = name
        self.any = header.strip() == "*"
        self.tags: list[tuple[bool, str]] = []
        if self.any:
            return
        position = 0
        text = header.strip()
        while position < len(text) and len(text) <= MAX_HEADER_CHARS:
            match = _ENTITY_TAG.match(text, position)
            if match is None or match.end() == position:
                break
            self.tags.append((match.group(1) is not None, match.group(2)))
            position = match.end()
        if len(text) > MAX_HEADER_CHARS or position < len(text) or not self.tags:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'malformed {name} header: expected * or entity tags such as "abc"',
            )

    def strong_match(self, etag: str) -> bool:
        return self.any or (bool(etag) and (False, etag) in self.tags)

    def weak_match(self, etag: str) -> bool:
        return self.any or (bool(etag) and any(tag == etag for _, tag in self.tags))

    def strong_tag(self) -> str | None:
        """The one strong tag a change can be made conditional on; None for `*`."""
        if self.any:
            return None
        strong = [tag for weak, tag in self.tags if not weak]
        if not strong:
            raise precondition_failed("a weak entity tag never matches If-Match")
        if len(strong) > 1:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT, "If-Match on a change takes one entity tag"
            )
        return strong[0]


def precondition_failed(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.FAILED_PRECONDITION, message, http_status=412)


def changed_since_read(error: ApiError) -> ApiError:
    """The service's ABORTED for a stale etag, as the 412 of a failed If-Match."""
    return ApiError(error.code, error.message, details=error.details, http_status=412)
