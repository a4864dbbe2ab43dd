"""Exception handlers: every error is JSON ``{"detail": ...}``, never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedrec_app.gateway.recommender import UnknownGenreError, UnknownIdsError

log = logging.getLogger(__name__)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


async def unknown_ids(request: Request, exc: UnknownIdsError) -> JSONResponse:
    """404 naming every unknown id: ``unknown_user_ids`` and/or ``unknown_movie_ids``."""
    named = {f"unknown_{kind}_ids": ids for kind, ids in exc.unknown.items()}
    return JSONResponse({"detail": str(exc), **named}, status_code=404)


async def unknown_genre(request: Request, exc: UnknownGenreError) -> JSONResponse:
    """422 naming the genre, with the genres the checkpoint knows."""
    return JSONResponse({"detail": str(exc), "known_genres": exc.known}, status_code=422)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    # The decorator form: Starlette's add_exception_handler types each handler as one of any
    # Exception, which a handler of one exception class is not.
    app.exception_handler(StarletteHTTPException)(http_error)
    app.exception_handler(RequestValidationError)(validation_error)
    app.exception_handler(UnknownIdsError)(unknown_ids)
    app.exception_handler(UnknownGenreError)(unknown_genre)
    app.add_exception_handler(Exception, internal_error)
