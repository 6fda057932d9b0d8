"""``/v2/replicas`` (also ``/v2/faces``, the newer name): stock replicas and those made from a photo (``run.py replica create``)."""

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile

from api.auth import require_api_key
from api.catalog import replica_ids, replica_public
from api.errors import ApiError
from api.models import MALFORMED_BODY, ErrorPublic, ListPublic, ReplicaPublic, ValidationErrorPublic

MAX_PHOTO_BYTES = 20 * 1024 * 1024

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


@router.post(
    "",
    response_model=ReplicaPublic,
    summary="Create a replica from a photo",
    responses={400: {"model": ErrorPublic, **MALFORMED_BODY}, 422: {"model": ValidationErrorPublic}},
)
async def create_replica(
    request: Request,
    replica_name: Annotated[str, Form(min_length=1, max_length=80, description="Display name; the id is made from it")],
    image: Annotated[UploadFile, File(description="A photo (PNG, JPEG) showing exactly one frontal face")],
):
    """The ``run.py replica create`` path: the face is found, levelled, cropped to 512x512 and kept."""
    from processors.replica.assets import ReplicaCreationError
    from processors.replica.assets import create_replica as make_replica

    data = await image.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise ApiError(422, f"image: larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MB")
    folder = request.app.state.settings.cvi_replicas_dir
    suffix = Path(image.filename or "photo").suffix[:8] or ".img"
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / f"upload{suffix}"
        photo.write_bytes(data)
        try:
            path = await asyncio.to_thread(
                _make_with_mesh, make_replica, request.app.state.settings.cvi_cache_dir, photo, replica_name,
                folder, image_source=image.filename or "uploaded over the API",
            )
        except ReplicaCreationError as e:
            # The message names server paths; the client knows its file by the name it sent.
            message = str(e).replace(str(photo), repr(image.filename or "image")).replace(f" in {folder}", "")
            raise ApiError(422, f"image: {message}") from e
    return replica_public(folder, path.name)


def _make_with_mesh(make_replica, cache_dir: Path, *args, **kwargs) -> Path:
    """Create the replica with its face mesh (when the face models are installed), in a worker thread."""
    from processors.replica.mesh import open_mesh_finder

    return make_replica(*args, mesh_finder=open_mesh_finder(cache_dir=cache_dir), **kwargs)
