"""Fixtures shared by every test folder of the workspace.

pytest's importlib mode names a test module after its folders (auth_service/tests/... becomes
`auth_service.tests...`) and would register the project folder as the package `auth_service`,
hiding the installed one. Importing the real packages first keeps them in place.
"""

import importlib
import os
import tempfile
from urllib.parse import urlsplit, urlunsplit

# hypothesis caches Unicode tables and constants in a .hypothesis/ folder of the working
# directory even with database=None: keep that folder out of the work tree.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "tienda-hypothesis")
)

for _package in ("auth_service", "product_service", "order_service", "gateway"):
    importlib.import_module(_package)

pytest_plugins = ["tienda_platform.testing"]


def pytest_configure() -> None:
    """Under pytest-xdist (`make test` runs two workers), each worker empties and fills a
    Redis database of its own on the machine's server: the one TIENDA_TEST_REDIS_URL names,
    plus the worker's number. PostgreSQL databases, ports and folders are per test already."""
    from tienda_platform.testing import REDIS_ENV  # loaded by now, as the plugin above

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    url = os.environ.get(REDIS_ENV, "")
    if worker.startswith("gw") and url:
        parts = urlsplit(url)
        number = int(parts.path.strip("/") or 0) + int(worker.removeprefix("gw"))
        os.environ[REDIS_ENV] = urlunsplit(parts._replace(path=f"/{number}"))
