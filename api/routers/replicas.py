"""``/v2/replicas`` (also ``/v2/faces``, the newer name): stock replicas and those made from a photo or a
short video of the person (``run.py replica create``)."""

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
MAX_VIDEO_BYTES = 500 * 1024 * 1024
_CHUNK = 1024 * 1024

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
    summary="Create a replica from a photo or a short video",
    responses={400: {"model": ErrorPublic, **MALFORMED_BODY}, 422: {"model": ValidationErrorPublic}},
)
async def create_replica(
    request: Request,
    replica_name: Annotated[str, Form(min_length=1, max_length=80, description="Display name; the id is made from it")],
    image: Annotated[
        UploadFile | None, File(description="A photo (PNG, JPEG) showing exactly one frontal face")
    ] = None,
    video: Annotated[
        UploadFile | None,
        File(description="Instead of a photo: 10-120 s of one person talking and listening, face to camera "
                         "(MP4, MOV, WebM); the replica plays an idle loop from it with the person's own mouths"),
    ] = None,
):
    """The ``run.py replica create`` path, with ``image`` (``--image``) or ``video`` (``--video``)."""
    from processors.replica.assets import ReplicaCreationError

    if image is None and video is None:
        raise ApiError(422, "image: field required; send a photo as 'image' or a 10-120 s video of the person as 'video'")
    if image is not None and video is not None:
        raise ApiError(422, "video: send a photo as 'image' or a video as 'video', not both")
    field, upload, limit = ("image", image, MAX_PHOTO_BYTES) if image is not None else ("video", video, MAX_VIDEO_BYTES)
    settings = request.app.state.settings
    folder = settings.cvi_replicas_dir
    suffix = Path(upload.filename or field).suffix[:8] or (".img" if field == "image" else ".video")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        await _save(upload, path, field, limit)
        try:
            made = await asyncio.to_thread(
                _make, field, settings.cvi_cache_dir, path, replica_name, folder, upload.filename
            )
        except ReplicaCreationError as e:
            # The message names server paths; the client knows its file by the name it sent.
            message = str(e).replace(str(path), repr(upload.filename or field)).replace(f" in {folder}", "")
            raise ApiError(422, f"{field}: {message}") from e
    return replica_public(folder, made.name)


async def _save(upload: UploadFile, path: Path, field: str, limit: int) -> None:
    """Copy an upload to ``path`` in chunks, refusing it past ``limit`` bytes."""
    size = 0
    with path.open("wb") as out:
        while chunk := await upload.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise ApiError(422, f"{field}: larger than {limit // (1024 * 1024)} MB")
            out.write(chunk)


def _make(field: str, cache_dir: Path, path: Path, name: str, folder: Path, filename: str | None) -> Path:
    """Create the replica with the packaged face models (when installed), in a worker thread."""
    from processors.replica.mesh import open_mesh_finder

    finder = open_mesh_finder(cache_dir=cache_dir)
    if field == "video":
        from processors.replica.video_replica import create_video_replica

        return create_video_replica(
            path, name, folder, mesh_finder=finder, video_source=filename or "uploaded over the API"
        )
    from processors.replica.assets import create_replica

    return create_replica(path, name, folder, mesh_finder=finder, image_source=filename or "uploaded over the API")
