"""A conversation's page and its signalling: ``/conversations/{id}/``.

The page is the dev room's (``bot/static``), and it signals to
``/conversations/{id}/api/offer`` (its URLs are relative to the page), so
each peer meets this conversation's bot. With ``require_auth`` the meeting
token is needed: ``?t=<token>`` on the page (kept in a cookie for that
conversation's path) or the ``x-meeting-token`` header on signalling.
"""

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.errors import ApiError, describe_validation_error
from bot.devroom import STATIC_DIR, IceCandidatesPatch, PageConfigPublic, PeerLeave, WebRTCAnswer, WebRTCOffer

TOKEN_COOKIE = "cvi_meeting_token"

router = APIRouter(tags=["conversation page"])


def _live(request: Request, conversation_id: str):
    live = request.app.state.live.get(conversation_id)
    if live is None or live.ending is not None:
        raise ApiError(404, f"conversation {conversation_id!r} is not running on this server")
    return live


def _check_token(live, presented: str | None) -> None:
    if live.meeting_token_sha256 is None:
        return
    if not presented:
        raise ApiError(401, "this conversation requires its meeting_token: open the page with ?t=<meeting_token>")
    digest = hashlib.sha256(presented.encode()).hexdigest()
    if not hmac.compare_digest(digest, live.meeting_token_sha256):
        raise ApiError(401, "invalid meeting_token for this conversation")


def _presented(request: Request, header: str | None) -> str | None:
    return header or request.query_params.get("t") or request.cookies.get(TOKEN_COOKIE)


async def _authorized_live(
    conversation_id: str, request: Request, x_meeting_token: Annotated[str | None, Header()] = None
):
    """The running conversation, once the page's meeting token (if it needs one) is checked."""
    live = _live(request, conversation_id)
    _check_token(live, _presented(request, x_meeting_token))
    return live


AuthorizedLive = Annotated[Any, Depends(_authorized_live)]


@router.get("/conversations/{conversation_id}", include_in_schema=False)
async def page_without_slash(conversation_id: str, request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/conversations/{conversation_id}/{query}", status_code=307)


@router.get("/conversations/{conversation_id}/", include_in_schema=False)
async def page(conversation_id: str, request: Request) -> Response:
    live = _live(request, conversation_id)
    token = request.query_params.get("t")
    _check_token(live, _presented(request, None))
    response = FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})
    if token:
        response.set_cookie(
            TOKEN_COOKIE, token, path=f"/conversations/{conversation_id}/", httponly=True, samesite="strict"
        )
    return response


@router.get("/conversations/{conversation_id}/api/config", include_in_schema=False)
async def page_config(live: AuthorizedLive) -> PageConfigPublic:
    """What the page needs to know of this conversation: its persona, mode and whether it shows captions."""
    return PageConfigPublic(
        persona=live.persona_name,
        pipeline_mode=live.persona.pipeline_mode,
        closed_captions=bool(live.properties.get("enable_closed_captions")),
    )


@router.post("/conversations/{conversation_id}/api/offer", include_in_schema=False)
async def offer(body: WebRTCOffer, live: AuthorizedLive) -> WebRTCAnswer:
    return await live.room.handle_offer(body)


@router.patch("/conversations/{conversation_id}/api/offer", include_in_schema=False)
async def patch_offer(body: IceCandidatesPatch, live: AuthorizedLive) -> dict[str, str]:
    await live.room.handle_patch(body)
    return {"status": "ok"}


@router.post("/conversations/{conversation_id}/api/leave", include_in_schema=False)
async def leave(request: Request, live: AuthorizedLive) -> Response:
    """The page's ``pagehide`` beacon: its peer's bot ends now."""
    try:
        body = PeerLeave.model_validate_json(await request.body())
    except ValidationError as e:
        raise ApiError(422, "; ".join(describe_validation_error(err) for err in e.errors(include_url=False))) from e
    await live.room.handle_leave(body)
    return JSONResponse({"status": "ok"})
