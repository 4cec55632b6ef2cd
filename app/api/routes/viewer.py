"""The viewer page at / (plain HTML, CSS and JavaScript from app/static)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def viewer() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
