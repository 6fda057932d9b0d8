"""An OpenAI-compatible chat endpoint on loopback: the network seam of the LLM, for tests that need a known answer.

``FakeChatServer(reply)`` serves ``POST /v1/chat/completions``: with
``"stream": true`` as streamed ``chat.completion.chunk`` events, as the
OpenAI API streams them, otherwise as one ``chat.completion``.
``reply(request_json)`` decides each answer: a ``str`` is said as text, a
``ToolCall`` is a call of one of the request's tools, a ``Failure`` is an
HTTP error (as OpenAI words it), a ``Slow`` waits before its answer. Every
request is kept in ``requests``, and its headers in ``headers``, so a test
can read what the bot sent (system prompt, tools, images, key).
"""

import asyncio
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


@dataclass
class Failure:
    """An HTTP error answer (401: a rejected key, 500: a server fault...)."""

    status: int
    message: str = "fake failure"


@dataclass
class Slow:
    """``then``, after ``seconds``."""

    seconds: float
    then: "str | ToolCall"


@dataclass
class Paced:
    """``text`` streamed one word every ``seconds_per_word``, as a slow LLM writes."""

    seconds_per_word: float
    text: str


Reply = Callable[[dict[str, Any]], "str | ToolCall | Failure | Slow | Paced"]


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _completion(answer: "str | ToolCall", number: int) -> dict[str, Any]:
    if isinstance(answer, ToolCall):
        call = {"id": f"call_{number}", "type": "function",
                "function": {"name": answer.name, "arguments": json.dumps(answer.arguments)}}
        message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": answer}, "stop"
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": "fake",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class FakeChatServer:
    def __init__(self, reply: Reply):
        self._reply = reply
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.base_url = ""
        self.words_sent: list[int] = []  # per streamed text answer: words written before it ended or the client left
        self.client_left: list[bool] = []

    def system_prompt(self, index: int = -1) -> str:
        """The system message of a request (the latest by default)."""
        messages = self.requests[index]["messages"]
        return next((m["content"] for m in messages if m["role"] == "system"), "")

    def images(self, index: int = -1) -> list[str]:
        """The image URLs of a request's messages (the latest by default), in order."""
        return [
            part["image_url"]["url"]
            for message in self.requests[index]["messages"] if isinstance(message.get("content"), list)
            for part in message["content"] if part.get("type") == "image_url"
        ]

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        answer = self._reply(body)
        if isinstance(answer, Slow):
            await asyncio.sleep(answer.seconds)
            answer = answer.then
        pace = 0.0
        if isinstance(answer, Paced):
            pace, answer = answer.seconds_per_word, answer.text
        if isinstance(answer, Failure):
            error = {"error": {"message": answer.message, "type": "fake_error", "code": answer.status}}
            return web.json_response(error, status=answer.status)
        if not body.get("stream"):
            return web.json_response(_completion(answer, len(self.requests)))
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if isinstance(answer, ToolCall):
            call = {"index": 0, "id": f"call_{len(self.requests)}", "type": "function",
                    "function": {"name": answer.name, "arguments": json.dumps(answer.arguments)}}
            await response.write(_chunk({"role": "assistant", "tool_calls": [call]}))
            await response.write(_chunk({}, "tool_calls"))
        else:
            await response.write(_chunk({"role": "assistant", "content": ""}))
            self.words_sent.append(0)
            self.client_left.append(False)
            try:
                for word in answer.split(" "):
                    await response.write(_chunk({"content": word + " "}))
                    self.words_sent[-1] += 1
                    if pace:
                        await asyncio.sleep(pace)
            except ConnectionError:
                self.client_left[-1] = True
                return response
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
