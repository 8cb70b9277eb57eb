"""/docs: Swagger UI from the files of the installed swagger-ui-bundle package (no CDN)."""

from __future__ import annotations

from pathlib import Path

import grpc
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from gateway.errors import ApiError

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/{asset}"
# The only files served: a fixed list, so no request path ever reaches the file system.
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)

# The bundled Swagger UI (4.x) renders OpenAPI 3.0 documents only, so the page presents the
# 3.1 document to it as 3.0.3; the schemas used here read the same under both versions.
_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>tienda REST API</title>
    <link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script>
      window.onload = async function () {
        const spec = await (await fetch("/openapi.json")).json();
        spec.openapi = "3.0.3";
        window.ui = SwaggerUIBundle({
          spec: spec,
          dom_id: "#swagger-ui",
          deepLinking: true,
          presets: [SwaggerUIBundle.presets.apis],
          layout: "BaseLayout",
        });
      };
    </script>
  </body>
</html>
"""


async def docs_page(request: Request, params: dict[str, str]) -> Response:
    """The Swagger UI page, reading /openapi.json."""
    return HTMLResponse(_PAGE)


async def docs_asset(request: Request, params: dict[str, str]) -> Response:
    """A static file of the bundled Swagger UI."""
    name = params["asset"]
    if name not in ASSETS:
        raise ApiError(grpc.StatusCode.NOT_FOUND, "no such file")
    return FileResponse(
        Path(str(swagger_ui_path)) / name, headers={"Cache-Control": "max-age=3600"}
    )
