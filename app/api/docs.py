"""GET /docs: Swagger UI served with its own assets, so the page works without internet.

The assets are package data of the pinned `fastapi-offline` (Swagger UI 5, which renders the
OpenAPI 3.1 that FastAPI emits; the 4.x bundles refuse it). The page references nothing outside
the service. create_app installs this only when KV_DOCS is on.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
_ASSET_DIR = Path(str(files("fastapi_offline").joinpath("static")))
# The only files served, with their types: a name is looked up here, never joined onto a path
# unchecked, so no request reaches another file.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI for the app's OpenAPI document at /docs, its assets under /docs/assets."""
    if app.openapi_url is None:
        raise ValueError("the docs page needs the OpenAPI document (openapi_url)")
    openapi_url = app.openapi_url
    title = f"{app.title} - Swagger UI"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def read_docs(request: Request) -> HTMLResponse:
        """The Swagger UI page; its URLs carry the root path, as FastAPI's own page does."""
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=title,
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            # Swagger UI's default names an online validator outside the service.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False)
    async def read_docs_asset(name: str) -> FileResponse:
        """One of Swagger UI's files; any other name is 404."""
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise HTTPException(404)
        return FileResponse(_ASSET_DIR / name, media_type=media_type)
