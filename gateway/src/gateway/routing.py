"""The route table: a trie over path segments, so a lookup costs one dict step per segment.

Literal segments are dict keys; `*` and `**` are one child each. A lookup prefers literals,
then `*`, then `**`, and backtracks only when a branch dead-ends, so it never scans every
template with a regex. A path that matches some route but not for this HTTP method is told
apart from an unknown path (405 versus 404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from gateway.templates import PathTemplate, SegmentKind, split_path

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
_Leaves = dict[str | None, dict[str, "Route"]]  # verb -> HTTP method -> route


@dataclass(frozen=True)
class Route:
    method: str
    template: PathTemplate
    handler: Handler

    @property
    def label(self) -> str:
        """The bounded name of this route in logs and metrics: its template."""
        return self.template.source


@dataclass(frozen=True)
class Match:
    """A route with its bound path variables, or (route None) the methods the path allows."""

    route: Route | None
    params: dict[str, str] = field(default_factory=dict)
    allowed: frozenset[str] = frozenset()


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    wildcard: _Node | None = None
    leaves: _Leaves = field(default_factory=dict)
    deep: _Leaves = field(default_factory=dict)  # routes whose template ends in `**`


class RouteTable:
    """Routes by path template and HTTP method."""

    def __init__(self) -> None:
        self._root = _Node()
        self.routes: list[Route] = []

    def add(self, route: Route) -> None:
        """Add a route; a second route for the same template, verb and method is an error."""
        node = self._root
        leaves = node.leaves
        for segment in route.template.segments:
            if segment.kind is SegmentKind.LITERAL:
                node = node.literals.setdefault(segment.literal, _Node())
                leaves = node.leaves
            elif segment.kind is SegmentKind.WILDCARD:
                node.wildcard = node.wildcard or _Node()
                node = node.wildcard
                leaves = node.leaves
            else:
                leaves = node.deep
        methods = leaves.setdefault(route.template.verb, {})
        if route.method in methods:
            raise ValueError(f"two routes for {route.method} {route.template.source}")
        methods[route.method] = route
        self.routes.append(route)

    def match(self, method: str, raw_path: str) -> Match | None:
        """The route for this method and raw path; None when no template matches the path."""
        segments = split_path(raw_path)
        allowed: set[str] = set()
        head, colon, verb = segments[-1].rpartition(":")
        if colon:
            with_verb = [*segments[:-1], head]
            for methods in _candidates(self._root, with_verb, 0, verb):
                if (route := methods.get(method)) is not None:
                    return Match(route, route.template.bind(with_verb))
                allowed.update(methods)
        for methods in _candidates(self._root, segments, 0, None):
            if (route := methods.get(method)) is not None:
                return Match(route, route.template.bind(segments))
            allowed.update(methods)
        return Match(None, allowed=frozenset(allowed)) if allowed else None


def _candidates(
    node: _Node, segments: list[str], index: int, verb: str | None
) -> Iterator[dict[str, Route]]:
    """Method maps of every template matching segments[index:], most specific first."""
    if index == len(segments):
        if (methods := node.leaves.get(verb)) is not None:
            yield methods
    else:
        segment = segments[index]
        if (child := node.literals.get(segment)) is not None:
            yield from _candidates(child, segments, index + 1, verb)
        if node.wildcard is not None and segment:
            yield from _candidates(node.wildcard, segments, index + 1, verb)
    if (methods := node.deep.get(verb)) is not None:
        yield methods
