"""``/v2/replicas`` (also ``/v2/faces``, the newer name): stock replicas and those made from a photo (``run.py replica create``)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.auth import require_api_key
from api.catalog import replica_ids, replica_public
from api.models import ErrorPublic, ListPublic, ReplicaPublic

router = APIRouter(
    tags=["replicas"],
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorPublic, "description": "Missing or invalid x-api-key"}},
)


@router.get("", response_model=ListPublic[ReplicaPublic], summary="List replicas")
async def list_replicas(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page")] = 10,
    page: Annotated[int, Query(ge=1, description="1-based page")] = 1,
):
    folder = request.app.state.settings.cvi_replicas_dir
    ids = replica_ids(folder)
    start = (page - 1) * limit
    return ListPublic[ReplicaPublic](
        data=[replica_public(folder, rid) for rid in ids[start : start + limit]], total_count=len(ids)
    )


@router.get(
    "/{replica_id}", response_model=ReplicaPublic, summary="Get a replica", responses={404: {"model": ErrorPublic}}
)
async def get_replica(replica_id: str, request: Request):
    return replica_public(request.app.state.settings.cvi_replicas_dir, replica_id)
