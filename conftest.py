"""Fixtures shared by every test folder of the workspace.

pytest's importlib mode names a test module after its folders (auth_service/tests/... becomes
`auth_service.tests...`) and would register the project folder as the package `auth_service`,
hiding the installed one. Importing the real packages first keeps them in place.
"""

import importlib

for _package in ("auth_service", "product_service", "order_service", "gateway"):
    importlib.import_module(_package)

pytest_plugins = ["tienda_platform.testing"]
