"""The Curate web UI, served by the gateway at `/`: the files Vite built from `frontend/` into
`static/` (shipped inside the package, so an installed wheel needs no Node), with every other
path answered by index.html so that the single-page app can route it."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse, Response

STATIC = Path(__file__).parent / "static"
# Vite names built assets by content hash: they never change, so browsers may keep them.
IMMUTABLE = "public, max-age=31536000, immutable"
NOT_BUILT = "The Curate UI is not built. Run `make ui` (or `make up`), which builds frontend/ with npm."


def install(app: FastAPI, static: Path = STATIC) -> None:
    root = static.resolve()

    @app.get("/{path:path}", include_in_schema=False)
    async def ui(path: str) -> Response:
        index = root / "index.html"
        if not index.is_file():
            return PlainTextResponse(NOT_BUILT, status_code=503)
        if path.startswith("api/"):
            return PlainTextResponse("not found", status_code=404)
        wanted = (root / path).resolve()
        if path and wanted.is_file() and wanted.is_relative_to(root):
            immutable = wanted.parent.name == "assets"
            return FileResponse(wanted, headers={"cache-control": IMMUTABLE if immutable else "no-cache"})
        if path.startswith("assets/"):  # a stale hashed name: a 404, not the app's HTML
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(index, headers={"cache-control": "no-cache"})
