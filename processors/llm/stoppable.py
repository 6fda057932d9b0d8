"""The LLM service that stops writing a reply once nothing more of it will be spoken.

``OpenAILLMService`` (llama.cpp's server or any OpenAI-compatible API) reads
a reply's stream to its end. When the processors after it send a
:class:`~processors.frames.StopReplyFrame` upstream (the reply has its last
sentence, or the cues answer in its place), this one closes the stream
instead: llama-server stops generating when its client leaves, so the CPU
goes to the voice and the video, and a cloud API bills no unused tokens.
The reply then ends as usual (an ``LLMFullResponseEndFrame`` follows).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.types import assert_given

from processors.frames import StopReplyFrame


class _StoppableStream:
    """A chat-completion stream that ends early once its service is asked to stop."""

    def __init__(self, stream, service: StoppableLLMService):
        self._stream = stream
        self._service = service

    def __aiter__(self) -> AsyncIterator:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator:
        chunks = 0
        async for chunk in self._stream:
            yield chunk
            chunks += 1
            if self._service.stop_requested:
                logger.debug(f"{self._service}: reply stopped after {chunks} chunks; the rest would not be spoken")
                self._service.stopped_early += 1
                return

    async def close(self) -> None:
        await self._stream.close()


class StoppableLLMService(OpenAILLMService):
    """``OpenAILLMService`` whose reply stream is closed on a :class:`StopReplyFrame`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._generating = False
        self.stop_requested = False
        self.stopped_early = 0  # replies cut short, for tests and logs

    async def invocation_params(self, context: LLMContext) -> dict:
        """The messages (system prompt first), tools and tool choice a request for ``context`` sends."""
        return await self.get_llm_adapter().get_llm_invocation_params(
            context,
            system_instruction=assert_given(self._settings.system_instruction),
            convert_developer_to_user=not self.supports_developer_role,
        )

    async def get_chat_completions(self, context: LLMContext):
        """Start a reply's stream, which ends early if a stop comes while it is read."""
        stream = await super().get_chat_completions(context)
        return _StoppableStream(stream, self)

    async def _process_context(self, context: LLMContext):
        self._generating = True
        try:
            await super()._process_context(context)
        finally:
            self._generating = False
            self.stop_requested = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """As ``OpenAILLMService``; a stop for the reply being written ends its stream."""
        if isinstance(frame, StopReplyFrame):
            await FrameProcessor.process_frame(self, frame, direction)  # the base's bookkeeping; it goes no further
            if self._generating:
                self.stop_requested = True
            return
        await super().process_frame(frame, direction)
