from collections.abc import Callable, Sequence
from typing import Any

def encode_spans(
    spans: Sequence[Any], lean_type: type, fallback: Callable[[Any], bytes], /
) -> bytes: ...
