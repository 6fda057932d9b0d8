"""The user's audio at the turn layer: the transcript not held behind it, and not carried past it.

**The transcript first.** Every pipecat processor takes its frames from a
priority queue in which system frames (``InputAudioRawFrame`` among them, 100
a second from a WebRTC peer) go before data frames such as
``TranscriptionFrame``. While Whisper decodes, both cores are busy and the
user's audio piles up along the pipeline; the transcript then reached the
user aggregator behind that backlog and waited until its queue held no audio
at all: up to 509 ms (171 median), behind 16-52 audio frames, in browser
visits on the 2-core machine (an observer on the pushes and the processing,
one browser round), and the reply could not start before it. Kept in
arrival order with the audio it still waited up to 133 ms (94 median): the
backlog had arrived first.
:func:`media_after_data` gives a processor a queue in which the user's
audio and camera frames come after data frames: every other system frame
(an interruption, a VAD event, the end of the call) still goes first, data
frames keep their order among themselves, and so does the media. For the
user aggregator that is also the true order: the audio queued behind a
transcript is the silence after the VAD's stop the transcript waited for.
Measured the same way: 2-116 ms (5 median), behind at most the one audio
frame being processed.

**No audio past the turn layer.** pipecat passes every frame on, so the
user's audio went on from the user aggregator through the LLM, the sentence
filter, the TTS, the renderer, the output transport and the assistant
aggregator, 100 frames a second through six processors and every observer
on each push, for nothing: none of them reads it. :class:`InputAudioEnd`
stops it there.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputAudioRawFrame, InputImageRawFrame, StartFrame, SystemFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorQueue

# Frames of the user's media: system frames to pipecat, but a stream in time like data.
MEDIA_FRAMES = (InputAudioRawFrame, InputImageRawFrame)


class MediaLastQueue(FrameProcessorQueue):
    """A processor's input queue in which media frames (``MEDIA_FRAMES``) come after data frames.

    The ``StartFrame`` comes first, then other system frames, then data
    frames, then media frames, each tier in arrival order.
    """

    MEDIA_PRIORITY = FrameProcessorQueue.DEFAULT_PRIORITY + 5

    def __init__(self):
        super().__init__()
        self._arrivals = 0

    async def put(self, item) -> None:
        """Queue ``(frame, direction, callback)`` in its tier."""
        frame = item[0]
        if isinstance(frame, StartFrame):
            priority = self.START_PRIORITY
        elif isinstance(frame, MEDIA_FRAMES):
            priority = self.MEDIA_PRIORITY
        elif isinstance(frame, SystemFrame):
            priority = self.SYSTEM_PRIORITY
        else:
            priority = self.DEFAULT_PRIORITY
        self._arrivals += 1
        # asyncio.PriorityQueue's own put: the tiers here replace FrameProcessorQueue's.
        await super(FrameProcessorQueue, self).put((priority, self._arrivals, item))


def media_after_data(processor: FrameProcessor) -> FrameProcessor:
    """Give ``processor`` (before it runs) a :class:`MediaLastQueue` for its input; returns it.

    pipecat 1.14 keeps a processor's input queue in a private attribute made
    once, in ``FrameProcessor.__init__``; it is replaced here.
    """
    name = "_FrameProcessor__input_queue"
    queue = getattr(processor, name, None)
    if not isinstance(queue, FrameProcessorQueue):
        raise RuntimeError(f"{processor}: no pipecat input queue at {name} (pipecat changed?)")
    if queue.qsize():
        raise RuntimeError(f"{processor}: its input queue already holds frames")
    setattr(processor, name, MediaLastQueue())
    return processor


class InputAudioEnd(FrameProcessor):
    """Drops the user's audio going downstream: put it after the last processor that reads it."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Pass every frame on but ``InputAudioRawFrame`` going downstream."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            return
        await self.push_frame(frame, direction)
