"""``/v2/personas`` (also ``/v2/pals``, the newer name): module personas (read-only) and those made over the API."""

from typing import Annotated

import jsonpatch
import jsonpointer
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import ValidationError

from api.auth import require_api_key
from api.catalog import public, resolve_persona, row_public, storable
from api.errors import ApiError, describe_validation_error, not_found
from api.models import MALFORMED_BODY, ErrorPublic, JsonPatchOperation, ListPublic, PersonaCreate, PersonaPublic, ValidationErrorPublic
from api.storage import new_id
from personas import list_personas, load_persona
from personas.model import Persona

router = APIRouter(
    tags=["personas"],
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorPublic, "description": "Missing or invalid x-api-key"}},
)


def _read_only(persona_id: str) -> ApiError:
    return ApiError(
        403, f"persona {persona_id!r} is defined in personas/{persona_id}.py and is read-only; "
        "create a persona with POST /v2/personas to change one"
    )


def _validated(data: dict) -> Persona:
    try:
        return Persona.model_validate(PersonaCreate.model_validate(data).model_dump())
    except ValidationError as e:
        errors = e.errors(include_url=False)
        raise ApiError(422, "; ".join(describe_validation_error(err) for err in errors[:3])) from e


@router.post(
    "",
    response_model=PersonaPublic,
    summary="Create a persona",
    responses={400: {"model": ErrorPublic, **MALFORMED_BODY}, 422: {"model": ValidationErrorPublic}},
)
async def create_persona(body: PersonaCreate, request: Request):
    persona = Persona.model_validate(body.model_dump())
    row = await request.app.state.store.add_persona(persona_id=new_id("p"), data=storable(persona))
    return row_public(row)


@router.get("", response_model=ListPublic[PersonaPublic], summary="List personas")
async def list_all(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page")] = 10,
    page: Annotated[int, Query(ge=1, description="1-based page")] = 1,
):
    """The module personas in ``personas/`` first (read-only), then those made over the API."""
    items = [public(name, load_persona(name), read_only=True) for name in list_personas()]
    items += [row_public(row) for row in await request.app.state.store.list_personas()]
    start = (page - 1) * limit
    return ListPublic[PersonaPublic](data=items[start : start + limit], total_count=len(items))


@router.get(
    "/{persona_id}", response_model=PersonaPublic, summary="Get a persona", responses={404: {"model": ErrorPublic}}
)
async def get_persona(persona_id: str, request: Request):
    store = request.app.state.store
    persona, is_module = await resolve_persona(store, persona_id)
    if is_module:
        return public(persona_id, persona, read_only=True)
    return row_public(await store.get_persona(persona_id))


@router.patch(
    "/{persona_id}",
    response_model=PersonaPublic,
    summary="Change a persona (RFC 6902 JSON Patch)",
    responses={
        400: {"model": ErrorPublic, **MALFORMED_BODY},
        403: {"model": ErrorPublic},
        404: {"model": ErrorPublic},
        409: {"model": ErrorPublic, "description": "A test operation failed; nothing was changed"},
        422: {"model": ValidationErrorPublic},
    },
)
async def patch_persona(
    persona_id: str,
    request: Request,
    operations: Annotated[list[JsonPatchOperation], Body(min_length=1, description="RFC 6902 operations")],
):
    """E.g. ``[{"op": "replace", "path": "/layers/llm/temperature", "value": 0.3}]``."""
    store = request.app.state.store
    if persona_id in list_personas():
        raise _read_only(persona_id)
    row = await store.get_persona(persona_id)
    if row is None:
        raise not_found("persona", persona_id)
    document = row.data
    for i, op in enumerate(operations):
        try:
            document = jsonpatch.JsonPatch([op.as_dict()]).apply(document)
        except jsonpatch.JsonPatchTestFailed as e:
            raise ApiError(409, f"operation {i} ({op.op} {op.path}): test failed: {e}") from e
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
            raise ApiError(422, f"operation {i} ({op.op} {op.path}): {e}") from e
    persona = _validated(document)
    updated = await store.replace_persona(persona_id, storable(persona))
    if updated is None:
        raise not_found("persona", persona_id)
    return row_public(updated)


@router.delete(
    "/{persona_id}",
    status_code=204,
    summary="Delete a persona",
    responses={403: {"model": ErrorPublic}, 404: {"model": ErrorPublic}},
)
async def delete_persona(persona_id: str, request: Request) -> Response:
    if persona_id in list_personas():
        raise _read_only(persona_id)
    if not await request.app.state.store.delete_persona(persona_id):
        raise not_found("persona", persona_id)
    return Response(status_code=204)
