"""Prefill the start of the user's next message while they are still talking (llama.cpp's server).

Each turn's request repeats the whole conversation; llama-server keeps the
last prompt's KV state, so a turn only processes what is new. What is new
is not only the user's words: the chat template closes the replica's reply
and opens the user's message before them (``<|im_end|>``, ``<|im_start|>user``
and newlines, 5-6 tokens with Qwen's template). On two busy cores prefill
runs at 25-35 tokens a second, so those tokens cost 150-250 ms of every
reply's first token.

Once a reply is in the context, :class:`NextTurnWarmer` renders the
conversation as the next request will send it, with the chat template
(``/apply-template``), cuts it where the user's words will begin, and has
the server process that prefix (``/completion``, nothing generated). The next
turn's request then finds it in the cache and processes only the user's
words and the assistant's header. It runs in the background; a failure is
logged and changes nothing.
"""

from __future__ import annotations

import asyncio

import httpx
from loguru import logger
from pipecat.processors.aggregators.llm_context import LLMContext

from processors.llm.stoppable import StoppableLLMService

# Stands for the user's next words while the template is rendered (an invisible separator).
_MARK = "\u2063"
TIMEOUT_S = 30.0


class NextTurnWarmer:
    """Keeps the start of the user's next message in llama-server's cache.

    Args:
        llm: The service whose requests are warmed (its system prompt and
            message conversion are used, so the prefix is exactly theirs).
        root_url: The llama.cpp server, without ``/v1``.
        slot: The server slot the conversation is pinned to (None: the server picks).
    """

    def __init__(self, llm: StoppableLLMService, root_url: str, *, slot: int | None = None):
        self._llm = llm
        self._root_url = root_url.rstrip("/")
        self._slot = slot
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self.warmed = 0  # prefixes the server processed, for tests and logs

    def schedule(self, context: LLMContext) -> None:
        """Warm the next turn of ``context`` in the background (a newer call replaces an unfinished one)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.create_task(self.warm(context))

    async def warm(self, context: LLMContext) -> int | None:
        """Have the server process ``context`` up to the user's next words; the tokens it processed, or None."""
        try:
            params = await self._llm.invocation_params(context)
            body = {"messages": [*params["messages"], {"role": "user", "content": _MARK}]}
            tools = params.get("tools")
            if isinstance(tools, list) and tools:  # (absent: OpenAI's NOT_GIVEN)
                body["tools"] = tools
            if self._client is None:
                # Made once, off the event loop: a new client builds its TLS context
                # (50-170 ms here), which would stall the call's audio and video.
                self._client = await asyncio.to_thread(httpx.AsyncClient, timeout=TIMEOUT_S)
            client = self._client
            rendered = await client.post(f"{self._root_url}/apply-template", json=body)
            rendered.raise_for_status()
            prompt = rendered.json()["prompt"]
            prefix = prompt[: prompt.rindex(_MARK)]
            body = {"prompt": prefix, "n_predict": 0, "cache_prompt": True}
            if self._slot is not None:
                body["id_slot"] = self._slot  # the conversation's own slot, where its next request goes
            done = await client.post(f"{self._root_url}/completion", json=body)
            done.raise_for_status()
            processed = done.json().get("timings", {}).get("prompt_n")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a warm-up that fails costs the next turn nothing but the saving
            logger.debug(f"{self}: could not warm the next turn: {type(e).__name__}: {e}")
            return None
        self.warmed += 1
        logger.debug(f"{self}: next turn warmed ({processed} prompt tokens processed)")
        return processed

    async def close(self) -> None:
        """Stop a warm-up still in flight, and close the connection."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def __str__(self) -> str:
        return f"NextTurnWarmer({self._root_url})"
