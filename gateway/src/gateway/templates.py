"""Path templates of google.api.http rules: parsing, and binding a matched path's variables.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

A template is flattened into a sequence of literal, `*` and `**` segments; each variable
records the span of segments it covers, so matching (see routing.py) never needs a regex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[^/{}*:=]+")
_ENCODED_SLASH = re.compile(r"%2[Ff]")


class TemplateError(ValueError):
    """A path template that does not follow the google.api.http grammar."""


class SegmentKind(Enum):
    LITERAL = "literal"
    WILDCARD = "*"
    DEEP_WILDCARD = "**"


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    literal: str = ""


@dataclass(frozen=True)
class Variable:
    """A field path bound to the segments [start, end); end None means "to the end" (`**`)."""

    field_path: tuple[str, ...]
    start: int
    end: int | None

    @property
    def name(self) -> str:
        return ".".join(self.field_path)

    @property
    def multi_segment(self) -> bool:
        return self.end is None or self.end - self.start > 1


@dataclass(frozen=True)
class PathTemplate:
    source: str
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str | None

    def openapi_path(self) -> str:
        """The template as an OpenAPI path: each `{var=pattern}` becomes `{var}`."""
        return re.sub(r"\{([^}=]+)=[^}]*\}", r"{\1}", self.source)

    def bind(self, raw_segments: list[str]) -> dict[str, str]:
        """Decoded values of the variables, for raw segments this template has matched."""
        values: dict[str, str] = {}
        for variable in self.variables:
            covered = raw_segments[variable.start : variable.end]
            if variable.multi_segment:
                # Reserved expansion: an encoded slash stays encoded inside a multi-segment value.
                values[variable.name] = "/".join(_decode_keeping_slashes(s) for s in covered)
            else:
                values[variable.name] = unquote(covered[0])
        return values


def _decode_keeping_slashes(raw: str) -> str:
    return "%2F".join(unquote(part) for part in _ENCODED_SLASH.split(raw))


def split_path(raw_path: str) -> list[str]:
    """The raw (still percent-encoded) segments of a request path."""
    return raw_path[1:].split("/") if raw_path.startswith("/") else raw_path.split("/")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.segments: list[Segment] = []
        self.variables: list[Variable] = []

    def parse(self) -> PathTemplate:
        self._expect("/")
        self._segments(in_variable=False)
        verb = None
        if self._peek(":"):
            self.pos += 1
            verb = self._match(_LITERAL, "a verb")
        if self.pos != len(self.text):
            raise self._error("unexpected character")
        for index, segment in enumerate(self.segments):
            if segment.kind is SegmentKind.DEEP_WILDCARD and index != len(self.segments) - 1:
                raise self._error("'**' must be the last segment")
        return PathTemplate(self.text, tuple(self.segments), tuple(self.variables), verb)

    def _segments(self, *, in_variable: bool) -> None:
        self._segment(in_variable=in_variable)
        while self._peek("/"):
            self.pos += 1
            self._segment(in_variable=in_variable)

    def _segment(self, *, in_variable: bool) -> None:
        if self.text.startswith("**", self.pos):
            self.pos += 2
            self.segments.append(Segment(SegmentKind.DEEP_WILDCARD))
        elif self._peek("*"):
            self.pos += 1
            self.segments.append(Segment(SegmentKind.WILDCARD))
        elif self._peek("{"):
            if in_variable:
                raise self._error("variables cannot nest")
            self._variable()
        else:
            self.segments.append(Segment(SegmentKind.LITERAL, self._match(_LITERAL, "a segment")))

    def _variable(self) -> None:
        self._expect("{")
        path = [self._match(_IDENT, "a field name")]
        while self._peek("."):
            self.pos += 1
            path.append(self._match(_IDENT, "a field name"))
        start = len(self.segments)
        if self._peek("="):
            self.pos += 1
            self._segments(in_variable=True)
        else:
            self.segments.append(Segment(SegmentKind.WILDCARD))
        self._expect("}")
        deep = self.segments[-1].kind is SegmentKind.DEEP_WILDCARD
        end = None if deep else len(self.segments)
        self.variables.append(Variable(tuple(path), start, end))

    def _peek(self, char: str) -> bool:
        return self.text.startswith(char, self.pos)

    def _expect(self, char: str) -> None:
        if not self._peek(char):
            raise self._error(f"expected {char!r}")
        self.pos += 1

    def _match(self, pattern: re.Pattern[str], what: str) -> str:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise self._error(f"expected {what}")
        self.pos = found.end()
        return found.group()

    def _error(self, problem: str) -> TemplateError:
        return TemplateError(f"{problem} at offset {self.pos} of path template {self.text!r}")


def parse_template(text: str) -> PathTemplate:
    """Parse a google.api.http path template."""
    return _Parser(text).parse()
