"""Cloud paths (Daily, Tavus) built for real and tested at the network seam."""

import ssl
import subprocess
import sys
import datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from pipecat.services.tavus.video import TavusVideoService
from pipecat.transports.tavus.transport import TavusApi
from pydantic import SecretStr

from bot.engines import EmbeddedModels
from bot.pipeline import Conversation, ConversationBot
from bot.daily import build_daily_transport
from bot.settings import Settings
from personas import load_persona

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]
CLOUD_KEYS = {
    "openai_api_key": SecretStr("sk-test"),
    "elevenlabs_api_key": SecretStr("el-test"),
    "tavus_api_key": SecretStr("tavus-test-key"),
}


def run_py(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_missing_key_stops_start_up_with_the_variable_and_persona(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--persona", "nova", "--port", "7999"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )
    assert proc.returncode == 2
    assert "OPENAI_API_KEY is required by persona 'nova'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_room_url_fails_before_anything_starts():
    proc = run_py("--room-url", "https://acme.daily.co/", "--persona", "ava")
    assert proc.returncode == 2 and "room name" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_py("--token", "t")
    assert proc.returncode == 2 and "--token needs --room-url" in proc.stderr


def test_daily_transport_carries_the_personas_media():
    persona = load_persona("ava")
    transport = build_daily_transport(persona, room_url="https://acme.daily.co/hello", token="tok")
    params = transport._params
    assert params.audio_in_enabled and params.audio_out_enabled
    assert params.video_out_enabled and params.video_out_is_live
    assert (params.video_out_width, params.video_out_height, params.video_out_framerate) == (512, 512, 25)
    assert params.audio_in_sample_rate == 16000
    # The room's mixed audio, one stream: never per-participant tracks interleaved into one STT.
    assert params.audio_in_user_tracks is False


async def test_tavus_persona_puts_tavus_video_in_the_pipeline():
    settings = Settings(_env_file=None, **CLOUD_KEYS)
    persona = load_persona("tavus_demo")

    class NullTransport:
        def input(self):
            from pipecat.processors.frame_processor import FrameProcessor

            return FrameProcessor()

        def output(self):
            from pipecat.processors.frame_processor import FrameProcessor

            return FrameProcessor()

    bot = ConversationBot(
        conversation=Conversation(persona=persona, persona_name="tavus_demo"),
        transport=NullTransport(),
        settings=settings,
        models=EmbeddedModels(settings),
    )
    await bot.build()
    try:
        (service,) = [p for p in bot.processors if isinstance(p, TavusVideoService)]
        assert service._replica_id == persona.replica_id
        assert service._api_key == "tavus-test-key"
        # Tavus renders the face: no local renderer, and the transport passes its video through.
        assert not any(type(p).__name__ == "ReplicaRendererProcessor" for p in bot.processors)
    finally:
        if bot._session is not None:
            await bot._session.close()


def test_tavus_transport_settings():
    from bot.pipeline import transport_media_params

    params = transport_media_params(load_persona("tavus_demo"))
    # The persona's size; Tavus's own rate (30 fps), not the persona's default 25.
    assert (params["video_out_width"], params["video_out_height"]) == (1280, 720)
    assert params["video_out_framerate"] == 30
    assert params["video_out_is_live"] and params["audio_out_auto_silence"] is False


class _LocalResolver(AbstractResolver):
    """Resolve every host to the local fake server (the network seam)."""

    def __init__(self, port: int):
        self._port = port

    async def resolve(self, host, port=0, family=0):
        import socket

        return [{"hostname": host, "host": "127.0.0.1", "port": self._port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    async def close(self):
        pass


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tavusapi.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return context


async def test_tavus_api_calls_carry_the_key_and_replica(tmp_path):
    """The Tavus REST calls our persona causes, answered by a local stand-in for tavusapi.com."""
    seen: list[tuple[str, str, dict | None, str | None]] = []

    async def create(request):
        body = await request.json()
        seen.append(("POST", request.path, body, request.headers.get("x-api-key")))
        return web.json_response({"conversation_id": "c123", "conversation_url": "https://tavus.daily.co/c123"})

    async def end(request):
        seen.append(("POST", request.path, None, request.headers.get("x-api-key")))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v2/conversations", create)
    app.router.add_post("/v2/conversations/{cid}/end", end)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=_self_signed(tmp_path))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        connector = aiohttp.TCPConnector(resolver=_LocalResolver(port), ssl=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            persona = load_persona("tavus_demo")
            api = TavusApi(api_key="tavus-test-key", session=session)
            created = await api.create_conversation(persona.replica_id, "pipecat0")
            await api.end_conversation(created["conversation_id"])
    finally:
        await runner.cleanup()
    assert seen[0] == ("POST", "/v2/conversations", {"replica_id": persona.replica_id, "persona_id": "pipecat0"}, "tavus-test-key")
    assert seen[1][:2] == ("POST", "/v2/conversations/c123/end")
