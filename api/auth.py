"""API keys: ``x-api-key`` on every ``/v2`` route.

Keys come from ``CVI_API_KEYS`` (comma-separated). When it is unset, the
server makes one key at its first start, keeps it in ``<data dir>/api_key``
(mode 600) and prints it once; later starts read it from there.
"""

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from api.webhooks import api_key_id, webhook_secret
from bot.settings import Settings

API_KEY_HEADER = "x-api-key"
KEY_FILE = "api_key"

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Your API key")


class Unauthorized(Exception):
    """No key, or a key the server does not know; the message says which."""


@dataclass(frozen=True)
class ApiKeys:
    """The keys this server accepts; ``generated`` holds a key made at this start (to print once)."""

    keys: tuple[str, ...]
    source: str
    generated: str | None = None

    def match(self, presented: str | None) -> str:
        """The key ``presented`` matches, compared in constant time against every key.

        Raises:
            Unauthorized: missing or unknown.
        """
        if not presented:
            raise Unauthorized(f"missing API key: send it in the {API_KEY_HEADER} header")
        found = None
        for key in self.keys:
            # Every key is compared, so the time taken does not say which one matched.
            if hmac.compare_digest(presented.encode(), key.encode()):
                found = key
        if found is None:
            raise Unauthorized(f"invalid API key in the {API_KEY_HEADER} header")
        return found

    def secret_for(self, key_id: str | None) -> bytes | None:
        """The webhook secret of the key with fingerprint ``key_id`` (None when that key is gone)."""
        for key in self.keys:
            if api_key_id(key) == key_id:
                return webhook_secret(key)
        return None


def load_api_keys(settings: Settings) -> ApiKeys:
    """The configured keys, or the kept (or newly made) one in the data folder."""
    configured = settings.api_keys()
    if configured:
        return ApiKeys(keys=tuple(configured), source="CVI_API_KEYS")
    path: Path = settings.data_dir / KEY_FILE
    if path.is_file():
        key = path.read_text().strip()
        if key:
            return ApiKeys(keys=(key,), source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return ApiKeys(keys=(key,), source=str(path), generated=key)


async def require_api_key(request: Request, presented: Annotated[str | None, Security(api_key_header)]) -> str:
    """The dependency on every /v2 route: returns the matched key's fingerprint."""
    keys: ApiKeys = request.app.state.api_keys
    return api_key_id(keys.match(presented))
