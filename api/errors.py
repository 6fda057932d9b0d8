"""Error bodies: ``{"error": "..."}`` naming the field, the value and what is allowed."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import Unauthorized


class ApiError(Exception):
    """An error the client can act on; ``status`` and one sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(kind: str, value: str, hint: str = "") -> ApiError:
    return ApiError(404, f"{kind} {value!r} not found" + (f"; {hint}" if hint else ""))


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def describe_validation_error(err: dict[str, Any]) -> str:
    """One sentence for one pydantic error: field, value, what is allowed."""
    where = _where(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"{where}: unknown field (not supported by this server)"
    if kind == "missing":
        return f"{where}: field required"
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if "input" in err and kind != "json_invalid" and not isinstance(err["input"], (dict, list)):
        value = repr(err["input"])
        if len(value) > 80:
            value = value[:77] + "..."
        return f"{where}: {message}; got {value}"
    return f"{where}: {message}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=401)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors
        ]
        summary = "; ".join(describe_validation_error(e) for e in errors[:3]) or "invalid request"
        return JSONResponse({"error": summary, "detail": detail}, status_code=422)
