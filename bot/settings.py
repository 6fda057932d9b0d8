"""The one place that reads the environment (and ``.env``).

Everything else receives a ``Settings`` object. Tests override it with
``get_settings.cache_clear()`` and environment variables, or by building a
``Settings(...)`` directly.
"""

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MissingKeyError(RuntimeError):
    """A persona needs a cloud key that is not set. Retrying will not help."""


class Settings(BaseSettings):
    """Configuration from the environment; see ``.env.example``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Cloud keys: only needed by personas whose layers use that engine.
    openai_api_key: SecretStr | None = None
    cartesia_api_key: SecretStr | None = None
    elevenlabs_api_key: SecretStr | None = None
    tavus_api_key: SecretStr | None = None
    daily_api_key: SecretStr | None = None
    # A meeting token for --room-url (kept off the command line, where `ps` shows it).
    daily_token: SecretStr | None = None
    daily_api_url: str = "https://api.daily.co/v1"
    # The Tavus API (``/v2/...`` is appended): the hosted one, or a compatible server.
    tavus_api_base_url: str = "https://tavusapi.com"

    # Embedded stack.
    cvi_cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "open-cvi")
    cvi_llama_server_bin: Path | None = None
    cvi_llm_base_url: str | None = None
    cvi_llm_model: str | None = None
    # One thread: llama.cpp's threads wait for each other at every layer, and on
    # two cores shared with the bot, the browser and other programs a second
    # thread is often descheduled; bench/llm_contention.py measured decode at
    # 2.1 tokens/s with two threads against 8.9 with one on such a machine.
    cvi_llm_threads: int = 1
    cvi_stt_model: str | None = None
    cvi_stt_threads: int = 2
    cvi_replicas_dir: Path = Field(
        default_factory=lambda: Path(__file__).resolve().parent.parent / "replicas"
    )
    cvi_log_level: str = "INFO"

    # The API server (``run.py serve``).
    # Comma-separated keys accepted in ``x-api-key``; unset: one is made at first start and kept in the data folder.
    cvi_api_keys: SecretStr | None = None
    # Where the API keeps its database (SQLite), its generated key and recordings; default: <cache dir>/data.
    cvi_data_dir: Path | None = None
    # SQLAlchemy async URL, e.g. postgresql+asyncpg://user:pw@host/db; default: SQLite in the data folder.
    cvi_database_url: SecretStr | None = None
    # The persona a conversation gets when the request names none.
    cvi_default_persona: str = "ava"
    # Webhook delivery: attempts per event and the first retry's delay (doubling after each failure).
    cvi_webhook_attempts: int = Field(default=5, ge=1, le=20)
    cvi_webhook_backoff_s: float = Field(default=1.0, ge=0.0, le=60.0)
    cvi_webhook_timeout_s: float = Field(default=10.0, gt=0.0, le=120.0)

    @property
    def data_dir(self) -> Path:
        """The API's data folder (database, generated key)."""
        return self.cvi_data_dir or self.cvi_cache_dir / "data"

    @property
    def database_url(self) -> str:
        """Where conversations and personas are stored."""
        if self.cvi_database_url is not None and self.cvi_database_url.get_secret_value().strip():
            return self.cvi_database_url.get_secret_value().strip()
        return f"sqlite+aiosqlite:///{self.data_dir / 'cvi.sqlite3'}"

    def api_keys(self) -> list[str]:
        """The keys from ``CVI_API_KEYS`` (empty when unset)."""
        if self.cvi_api_keys is None:
            return []
        return [k.strip() for k in self.cvi_api_keys.get_secret_value().split(",") if k.strip()]

    def require_key(self, env_name: str, *, persona: str, needed_by: str) -> str:
        """Return the key named ``env_name`` or fail with how to fix it."""
        value = getattr(self, env_name.lower(), None)
        if value is None or not value.get_secret_value().strip():
            raise MissingKeyError(
                f"{env_name} is required by persona {persona!r} ({needed_by}); set it in .env"
            )
        return value.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings."""
    return Settings()
