"""Fixtures shared by every test folder of the workspace.

pytest's importlib mode names a test module after its folders (auth_service/tests/... becomes
`auth_service.tests...`) and would register the project folder as the package `auth_service`,
hiding the installed one. Importing the real packages first keeps them in place.
"""

import importlib
import os
import tempfile

# hypothesis caches Unicode tables and constants in a .hypothesis/ folder of the working
# directory even with database=None: keep that folder out of the work tree.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "tienda-hypothesis")
)

for _package in ("auth_service", "product_service", "order_service", "gateway"):
    importlib.import_module(_package)

pytest_plugins = ["tienda_platform.testing"]
