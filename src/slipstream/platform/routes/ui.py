"""The web UI: static files (HTML, JavaScript, CSS) from slipstream/platform/ui, no build step.

The page itself is public (it holds no data); everything it shows comes from /api/v1 with the user's key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from slipstream.platform.routes.common import not_found

UI = Path(__file__).resolve().parent.parent / "ui"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/")
async def index() -> FileResponse:
    return FileResponse(UI / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/ui/{name}")
async def asset(name: str) -> FileResponse:
    path = UI / name
    # only the files that are there: no subdirectories, no dot files, nothing outside ui/
    if "/" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        raise not_found("file", name)
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
