"""Makes `gateway` the installed package, not this project folder.

pytest's importlib mode names this file `gateway.tests.conftest` and, to import it, puts a
namespace module for the folder /work/main/gateway into sys.modules under the name `gateway`,
hiding the real package in src/. Swap the real one back in before any test imports it.
"""

import importlib
import sys

_shadow = sys.modules.get("gateway")
if _shadow is not None and getattr(_shadow, "__file__", None) is None:
    del sys.modules["gateway"]
    importlib.import_module("gateway")
