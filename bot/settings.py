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
    cvi_llm_threads: int = 2
    cvi_stt_model: str | None = None
    cvi_stt_threads: int = 2
    cvi_replicas_dir: Path = Field(
        default_factory=lambda: Path(__file__).resolve().parent.parent / "replicas"
    )
    cvi_log_level: str = "INFO"

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
