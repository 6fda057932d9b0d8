"""An OpenAI-compatible chat endpoint on loopback: the network seam of the LLM, for tests that need a known answer.

``FakeChatServer(reply)`` serves ``POST /v1/chat/completions`` with
streamed ``chat.completion.chunk`` events, as the OpenAI API streams them;
``reply(request_json)`` decides each answer: a ``str`` is said as text, a
``ToolCall`` is a call of one of the request's tools. Every request is kept
in ``requests`` so a test can read what the bot sent (system prompt, tools).
"""

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


Reply = Callable[[dict[str, Any]], "str | ToolCall"]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeChatServer:
    def __init__(self, reply: Reply):
        self._reply = reply
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""

    def system_prompt(self, index: int = -1) -> str:
        """The system message of a request (the latest by default)."""
        messages = self.requests[index]["messages"]
        return next((m["content"] for m in messages if m["role"] == "system"), "")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        answer = self._reply(body)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if isinstance(answer, ToolCall):
            call = {"index": 0, "id": f"call_{len(self.requests)}", "type": "function",
                    "function": {"name": answer.name, "arguments": json.dumps(answer.arguments)}}
            await response.write(_chunk({"role": "assistant", "tool_calls": [call]}))
            await response.write(_chunk({}, "tool_calls"))
        else:
            await response.write(_chunk({"role": "assistant", "content": ""}))
            for word in answer.split(" "):
                await response.write(_chunk({"content": word + " "}))
            await response.write(_chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["FakeChatServer"]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        try:
            yield self
        finally:
            await runner.cleanup()
