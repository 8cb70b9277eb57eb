"""What the deployment tests share: the repository's files, the metric catalogue, PromQL
metric extraction, and the Prometheus tools from Debian's packages."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from debian_tools import debian_tool

REPO = Path(__file__).resolve().parents[2]
OBSERVABILITY = REPO / "observability"

# PromQL words that look like metric names but are not.
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left"}
_KEYWORDS |= {"group_right", "bool", "offset", "inf", "nan", "start", "end"}
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (Grafana variables allowed) selects."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it (anchors and merge keys resolved)."""
    document = load_yaml(REPO / "docker-compose.yml")
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="session")
def metric_catalogue() -> dict[str, str]:
    """observability/METRICS.md: metric name -> type."""
    rows = re.findall(
        r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|",
        (OBSERVABILITY / "METRICS.md").read_text(),
        flags=re.MULTILINE,
    )
    assert rows, "METRICS.md has no metric table"
    return dict(rows)


@pytest.fixture(scope="session")
def known_series(metric_catalogue: dict[str, str]) -> set[str]:
    """Every series name a query may select: histograms as _bucket, _sum and _count too."""
    series = set(metric_catalogue)
    for name, kind in metric_catalogue.items():
        if kind in ("histogram", "summary"):
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return series


@pytest.fixture(scope="session")
def metric_names_of() -> Callable[[str], set[str]]:
    return promql_metric_names


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, from Debian's `prometheus` package."""
    return debian_tool("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    """amtool, from Debian's `prometheus-alertmanager` package."""
    return debian_tool("amtool", "prometheus-alertmanager")
