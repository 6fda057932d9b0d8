"""Personas and replicas as the API sees them: module personas (read-only) and stored ones."""

from typing import Any

from personas import list_personas, load_persona
from personas.model import Persona

from api.errors import ApiError, not_found
from api.models import PersonaPublic, ReplicaPublic
from api.storage import PersonaRow, Store, as_utc

# Replicas that ship with the project; any other in the replicas folder was made by a user.
STOCK_REPLICA_IDS = ("ada", "eileen", "leo")
LIST_IN_ERRORS = 20


def storable(persona: Persona) -> dict[str, Any]:
    """The persona as JSON, secrets included (the engines need them)."""
    data = persona.model_dump(mode="json")
    for layer in ("llm", "perception"):
        api_key = getattr(persona.layers, layer).api_key
        data["layers"][layer]["api_key"] = api_key.get_secret_value() if api_key is not None else None
    return data


def public(persona_id: str, persona: Persona, *, read_only: bool, created_at=None, updated_at=None) -> PersonaPublic:
    """The persona as the API shows it: secrets masked."""
    data = persona.model_dump(mode="json")
    return PersonaPublic(
        persona_id=persona_id,
        persona_name=data["persona_name"],
        system_prompt=data["system_prompt"],
        context=data["context"],
        default_replica_id=data["default_replica_id"],
        custom_greeting=data["custom_greeting"],
        pipeline_mode=data["pipeline_mode"],
        layers=data["layers"],
        read_only=read_only,
        created_at=as_utc(created_at),
        updated_at=as_utc(updated_at),
    )


def stored_persona(data: dict[str, Any]) -> Persona:
    """A stored persona as its engines see it: a field at its default counts as not set.

    A stored persona carries every field; the checks that refuse a setting
    that would do nothing (``bot.engines.refused_fields``) look at the fields
    set, so one left at its default must not count as given.
    """
    persona = Persona.model_validate(data)
    return Persona.model_validate(persona.model_dump(exclude_defaults=True))


def row_public(row: PersonaRow) -> PersonaPublic:
    return public(
        row.persona_id, Persona.model_validate(row.data), read_only=False,
        created_at=row.created_at, updated_at=row.updated_at,
    )


async def all_persona_ids(store: Store) -> list[str]:
    return list_personas() + [row.persona_id for row in await store.list_personas()]


def _listed(ids: list[str]) -> str:
    shown = ", ".join(ids[:LIST_IN_ERRORS])
    return shown + (f" and {len(ids) - LIST_IN_ERRORS} more" if len(ids) > LIST_IN_ERRORS else "")


async def resolve_persona(store: Store, persona_id: str, *, field: str | None = None) -> tuple[Persona, bool]:
    """The persona called ``persona_id`` and whether it is a module one.

    Raises:
        ApiError: 404 naming the id (422 naming ``field`` when it came from a request body).
    """
    if persona_id in list_personas():
        return load_persona(persona_id), True
    row = await store.get_persona(persona_id)
    if row is not None:
        return stored_persona(row.data), False
    available = _listed(await all_persona_ids(store))
    if field is not None:
        raise ApiError(422, f"{field}: persona {persona_id!r} not found; available: {available}")
    raise not_found("persona", persona_id, f"available: {available}")


def replica_ids(replicas_dir) -> list[str]:
    from processors.replica.assets import list_replicas

    return list_replicas(replicas_dir)


def replica_public(replicas_dir, replica_id: str) -> ReplicaPublic:
    """One replica's public record.

    Raises:
        ApiError: 404 naming the id and listing those there are.
    """
    import json

    meta_path = replicas_dir / replica_id / "replica.json"
    if "/" in replica_id or replica_id.startswith(".") or not meta_path.is_file():
        raise not_found("replica", replica_id, f"available: {_listed(replica_ids(replicas_dir)) or 'none'}")
    meta = json.loads(meta_path.read_text())
    return ReplicaPublic(
        replica_id=replica_id,
        replica_name=meta.get("replica_name", replica_id),
        default_voice=meta.get("default_voice"),
        replica_type="system" if replica_id in STOCK_REPLICA_IDS else "user",
    )
