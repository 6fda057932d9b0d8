"""The user's audio at the turn layer: a transcript is not held behind it, and it goes no further."""

import asyncio
import time

import pytest
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from processors.turn.media_order import InputAudioEnd, MediaLastQueue, media_after_data

pytestmark = pytest.mark.unit


def _audio() -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=bytes(320), sample_rate=16000, num_channels=1)


class BusyListener(FrameProcessor):
    """Takes 10 ms per audio frame (as the VAD and turn strategy on a busy machine); notes what it took when."""

    def __init__(self):
        super().__init__()
        self.taken: list[tuple[str, float]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await asyncio.sleep(0.01)
        if isinstance(frame, (InputAudioRawFrame, TranscriptionFrame)):
            self.taken.append((type(frame).__name__, time.monotonic()))
        await self.push_frame(frame, direction)


async def _audio_taken_before_the_transcript(listener: BusyListener) -> int:
    # A backlog of audio, the transcript, then more audio: all queued at once.
    frames = [_audio() for _ in range(20)] + [TranscriptionFrame("Hello there.", "user", "now")] + [_audio() for _ in range(5)]
    # (The EndFrame, a control frame, would pass the queued audio too: it waits until all is taken.
    # 25 frames take 0.25 s on an idle machine; the wait leaves room for a busy one.)
    await run_test(listener, frames_to_send=[*frames, SleepFrame(2.0)])
    names = [name for name, _ in listener.taken]
    assert names.count("InputAudioRawFrame") == 25 and names.count("TranscriptionFrame") == 1
    return names.index("TranscriptionFrame")


async def test_a_transcript_is_not_held_behind_the_audio_queued_at_a_busy_processor():
    stock = await _audio_taken_before_the_transcript(BusyListener())
    ours = await _audio_taken_before_the_transcript(media_after_data(BusyListener()))
    print(f"\naudio frames taken before the transcript: pipecat's queue {stock}, media after data {ours}")
    assert stock >= 20  # behind every audio frame queued with it, even the ones after it
    assert ours <= 2  # behind the frame in hand at most


async def test_system_frames_still_come_first_and_each_tier_keeps_its_order():
    queue = MediaLastQueue()
    frames = [_audio(), TextFrame("a"), _audio(), InterruptionFrame(), TextFrame("b"), StartFrame()]
    for frame in frames:
        await queue.put((frame, FrameDirection.DOWNSTREAM, None))
    order = [(await queue.get())[0] for _ in frames]
    assert order == [frames[5], frames[3], frames[1], frames[4], frames[0], frames[2]]


def test_a_processor_that_already_runs_keeps_its_queue():
    processor = FrameProcessor()
    asyncio.run(processor._FrameProcessor__input_queue.put((_audio(), FrameDirection.DOWNSTREAM, None)))
    with pytest.raises(RuntimeError, match="already holds frames"):
        media_after_data(processor)


async def test_the_user_s_audio_goes_no_further_and_everything_else_does():
    text = TextFrame("reply")
    down, _ = await run_test(InputAudioEnd(), frames_to_send=[_audio(), text, _audio()], expected_down_frames=[TextFrame])
    assert down[0] is text
    # Upstream (never sent that way by pipecat, but nothing to end there) it passes.
    await run_test(
        InputAudioEnd(), frames_to_send=[_audio()], frames_to_send_direction=FrameDirection.UPSTREAM,
        expected_up_frames=[InputAudioRawFrame],
    )
