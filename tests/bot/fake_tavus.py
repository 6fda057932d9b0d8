"""A stand-in for the Tavus API on 127.0.0.1, for ``TAVUS_API_BASE_URL``.

It knows one key and a few replicas, creates conversations (each with a
Daily room URL that ``fake_daily`` serves) and records every call, so a test
can say which conversations were created, when, and whether they were ended.
"""

import time
from dataclasses import dataclass, field

from aiohttp import web

GOOD_KEY = "tavus-good-key"
REPLICA = "r79e1c033f"


@dataclass
class FakeTavus:
    """The fake API's state."""

    replicas: set[str] = field(default_factory=lambda: {REPLICA})
    calls: list[tuple[str, str]] = field(default_factory=list)
    created: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    base_url: str = ""

    def open_conversations(self) -> list[str]:
        """Conversations created and not ended (each one costs money on the real service)."""
        return [c for c in self.created if c not in self.ended]

    def app(self) -> web.Application:
        async def authorized(request: web.Request) -> bool:
            return request.headers.get("x-api-key") == GOOD_KEY

        async def get_replica(request: web.Request) -> web.Response:
            self.calls.append(("GET", request.path))
            if not await authorized(request):
                return web.json_response({"message": "Invalid access token"}, status=401)
            replica_id = request.match_info["replica_id"]
            if replica_id not in self.replicas:
                return web.json_response({"error": "replica not found"}, status=404)
            return web.json_response({"replica_id": replica_id, "status": "completed"})

        async def create(request: web.Request) -> web.Response:
            self.calls.append(("POST", request.path))
            if not await authorized(request):
                return web.json_response({"message": "Invalid access token"}, status=401)
            body = await request.json()
            if body.get("replica_id") not in self.replicas:
                return web.json_response({"error": "replica not found"}, status=400)
            cid = f"c{len(self.created) + 1}"
            self.created[cid] = time.monotonic()
            return web.json_response(
                {"conversation_id": cid, "conversation_url": f"https://tavus.daily.co/{cid}", "status": "active"}
            )

        async def end(request: web.Request) -> web.Response:
            self.calls.append(("POST", request.path))
            if not await authorized(request):
                return web.json_response({"message": "Invalid access token"}, status=401)
            self.ended.setdefault(request.match_info["cid"], time.monotonic())
            return web.json_response({})

        app = web.Application()
        app.router.add_get("/v2/replicas/{replica_id}", get_replica)
        app.router.add_post("/v2/conversations", create)
        app.router.add_post("/v2/conversations/{cid}/end", end)
        return app


async def serve_fake_tavus() -> tuple[FakeTavus, web.AppRunner]:
    """Start the fake on 127.0.0.1 (a free port); ``fake.base_url`` is its URL."""
    fake = FakeTavus()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    fake.base_url = f"http://127.0.0.1:{port}"
    return fake, runner
