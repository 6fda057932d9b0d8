"""The renderer processor in a pipeline: pacing, liveliness, interruption."""

import asyncio

import numpy as np
import pytest

from pipecat.frames.frames import (
    InputTextRawFrame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.workers.runner import WorkerRunner

from processors.frames import PhonemeTimingFrame
from processors.replica.assets import load_replica
from processors.replica.face import IdleMotion
from processors.replica.renderer import ReplicaRendererParams, ReplicaRendererProcessor
from tests.replica.measure import eye_whites, mouth_opening

pytestmark = pytest.mark.models


def _speech_frames(speech, chunk_s=0.25):
    audio, rate, phonemes = speech
    frames = [PhonemeTimingFrame(phonemes=phonemes, sample_rate=rate)]
    step = int(rate * chunk_s)
    for start in range(0, len(audio), step):
        frames.append(TTSAudioRawFrame(audio[start : start + step].tobytes(), rate, 1))
    return frames


def _rgb(frame: OutputImageRawFrame) -> np.ndarray:
    w, h = frame.size
    return np.frombuffer(frame.image, np.uint8).reshape(h, w, 3)


async def test_steady_25_fps_for_10_s_and_audio_passes_unchanged(speech):
    renderer = ReplicaRendererProcessor(replica=load_replica("ada"))
    sent = _speech_frames(speech)
    down, _ = await run_test(renderer, frames_to_send=[*sent, SleepFrame(10.3)])

    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    times = np.array([f.metadata["replica_time"] for f in images])
    in_window = np.count_nonzero((times >= times[0]) & (times < times[0] + 10.0))
    assert abs(in_window - 250) <= 1, f"{in_window} frames in 10 s; largest gap {np.diff(times).max():.3f} s"
    assert all(f.size == (512, 512) and f.format == "RGB" for f in images)

    # Audio passes on unchanged and in order; phoneme timing is consumed.
    audio_out = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert [f.audio for f in audio_out] == [f.audio for f in sent[1:]]
    assert not any(isinstance(f, PhonemeTimingFrame) for f in down)

    # While speaking the face keeps changing (a frame repeats only where the
    # mouth holds a shape and the head holds still, never for long), and the mouth moves.
    speaking = [i for i, f in enumerate(images) if f.metadata["replica_speaking"]]
    duration = len(speech[0]) / speech[1]
    assert len(speaking) >= int(duration * 25) - 2, f"{len(speaking)} speaking frames for {duration:.2f} s"
    same = [images[i].image == images[i - 1].image for i in speaking[1:]]
    longest = max((len(run) for run in "".join("s" if x else "." for x in same).split(".")), default=0)
    print(f"speaking frames the same as the one before: {sum(same)} of {len(same)}, at most {longest} in a row")
    assert sum(same) <= 0.15 * len(same) and longest <= 3, (sum(same), len(same), longest)
    landmarks = renderer._rig.landmarks
    openings = [mouth_opening(_rgb(images[i]), landmarks) for i in speaking]
    assert max(openings) - min(openings) > 150


async def test_a_listening_replica_draws_fewer_frames_and_speech_gets_the_full_rate_at_once(speech):
    # 2 frames a second while listening: a first syllable that waited for the next slot would be late by up to 500 ms.
    renderer = ReplicaRendererProcessor(replica=load_replica("ada"), params=ReplicaRendererParams(idle_fps=2))
    down, _ = await run_test(renderer, frames_to_send=[SleepFrame(2.0), *_speech_frames(speech), SleepFrame(8.0)])

    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    times = np.array([f.metadata["replica_time"] for f in images])
    speaking = np.array([f.metadata["replica_speaking"] for f in images])
    assert np.all(np.diff(times) > 0)
    first, last = np.flatnonzero(speaking)[[0, -1]]
    duration = len(speech[0]) / speech[1]
    # Listening, before the speech: 2 frames a second.
    before = np.count_nonzero(times < times[first] - 0.55)
    assert 2 <= before <= 5, f"{before} frames in the 2 s before speech"
    # Speech: 25 a second from its first sample (no idle frame's wait delays the first syllable).
    assert np.count_nonzero(speaking) >= int(duration * 25) - 2
    assert np.diff(times[first : last + 1]).max() < 0.045
    speech_start = renderer.speech_track._runs[0].wall_start
    # At most one speaking frame's period and a half (it shows the audio at its middle).
    assert times[first] - speech_start <= 0.061, "the first syllable waited for a listening frame's slot"
    # Listening again once the lips have settled.
    after = times[times > times[last] + 1.0]
    assert len(after) >= 3 and np.median(np.diff(after)) == pytest.approx(0.5, abs=0.01)


async def test_interruption_returns_mouth_to_rest_within_one_frame(speech):
    renderer = ReplicaRendererProcessor(replica=load_replica("ada"))
    down, _ = await run_test(
        renderer,
        frames_to_send=[*_speech_frames(speech), SleepFrame(1.5), InterruptionFrame(), SleepFrame(0.5)],
    )
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before = [f for f in down[:cut] if isinstance(f, OutputImageRawFrame)]
    after = [f for f in down[cut:] if isinstance(f, OutputImageRawFrame)]
    assert before[-1].metadata["replica_speaking"]
    landmarks = renderer._rig.landmarks
    rest = mouth_opening(renderer._rig.base, landmarks)
    spoken = max(mouth_opening(_rgb(f), landmarks) for f in before[-25:])
    assert spoken > rest + 150
    # The first frame rendered after the interruption has the mouth at rest, and so do all later ones.
    assert not after[0].metadata["replica_speaking"]
    for f in after:
        assert abs(mouth_opening(_rgb(f), landmarks) - rest) < 0.15 * (spoken - rest)
    # Queued speech timing is gone.
    assert not renderer.speech_track.is_speaking(after[-1].metadata["replica_time"])


def test_blinks_every_2_to_6_s_and_visible_in_pixels():
    idle = IdleMotion(seed=3)
    blinks = np.array(idle.blink_times(600.0))
    gaps = np.diff(blinks)
    assert gaps.max() <= 6.0
    assert np.all((gaps >= 2.0) | np.isclose(gaps, 0.3))  # 0.3 s: a double blink
    assert len(set(np.round(gaps, 2))) > 20  # irregular

    # Ten seconds of listening, rendered on an injected clock: the eyes close at least once.
    renderer = ReplicaRendererProcessor(
        replica=load_replica("leo"), params=ReplicaRendererParams(seed=5), clock=lambda: 0.0
    )
    landmarks = renderer._rig.landmarks
    whites = []
    previous = None
    held = longest = 0
    for i in range(250):
        frame, speaking = renderer.render_at(i / 25 + 0.02)
        assert not speaking
        whites.append(eye_whites(frame, landmarks))
        held = held + 1 if previous is not None and np.array_equal(frame, previous) else 0
        longest = max(longest, held)
        previous = frame
    # Head and breath keep moving: the head holds still only between steps too small to see (slowest
    # where the sway turns), never for a second.
    print(f"at most {longest} frames the same as the one before in a row")
    assert longest < 25, longest
    whites = np.array(whites)
    open_level = np.median(whites)
    assert np.count_nonzero(whites < 0.4 * open_level) >= 1


class _Stuck(FrameProcessor):
    """Holds every frame after the StartFrame: a CancelFrame never gets past it."""

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
        else:
            await asyncio.sleep(3600)


async def test_a_call_whose_cancel_is_stuck_stops_rendering_when_its_worker_ends():
    """The cancel times out (as on a starved CPU, after a closed tab): cleanup still stops the frame loop."""
    renderer = ReplicaRendererProcessor(replica=load_replica("ada"))
    worker = PipelineWorker(
        Pipeline([_Stuck(), renderer]), cancel_timeout_secs=0.5, enable_rtvi=False, idle_timeout_secs=None
    )
    run = asyncio.create_task(_run(worker))
    for _ in range(100):
        if renderer.frames_rendered > 5:
            break
        await asyncio.sleep(0.05)
    assert renderer.frames_rendered > 5
    await worker.queue_frame(InputTextRawFrame("held"))  # the stuck processor now holds the queue
    await worker.cancel()
    await asyncio.wait_for(run, 10)
    rendered = renderer.frames_rendered
    await asyncio.sleep(0.5)
    assert renderer.frames_rendered == rendered, "the replica kept rendering after its call ended"


async def _run(worker):
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def _voice(t: float) -> float:
    """A speaker's loudness: 1.5 s phrases with 0.5 s pauses between them."""
    return 0.5 if (t % 2.0) < 1.5 else 0.0


def test_a_blink_due_mid_word_waits_for_the_next_pause():
    mouth = np.zeros(3)
    speaking, silent = IdleMotion(seed=1), IdleMotion(seed=1)
    starts: dict[str, list[float]] = {"speaking": [], "silent": []}
    previous = {"speaking": 0.0, "silent": 0.0}
    for i in range(25 * 60):
        t = i / 25
        for name, idle, loudness in (("speaking", speaking, _voice(t)), ("silent", silent, 0.0)):
            blink = idle.pose_at(t, mouth, loudness).blink
            if blink > 0 and previous[name] == 0:
                starts[name].append(t)
            previous[name] = blink
    # Left alone, some blinks would fall mid-phrase; with the voice none starts there.
    assert any(_voice(t) > 0 for t in starts["silent"])
    assert starts["speaking"] and all(_voice(t) == 0 for t in starts["speaking"])
    assert len(starts["speaking"]) >= len(starts["silent"]) // 2  # still blinking


def test_the_head_nods_at_the_end_of_a_phrase_not_after_a_short_word():
    mouth = np.zeros(3)

    def nod_depth(voiced_s: float) -> tuple[float, float]:
        """Most extra head drop (px) against a silent twin before and after a phrase of ``voiced_s`` ending at 2 s."""
        talker, twin = IdleMotion(seed=2), IdleMotion(seed=2)
        before, after = 0.0, 0.0
        for i in range(25 * 4):
            t = i / 25
            loudness = 0.5 if 2.0 - voiced_s <= t < 2.0 else 0.0
            extra = talker.pose_at(t, mouth, loudness).head[1] - twin.pose_at(t, mouth, 0.0).head[1]
            if t < 2.0 - voiced_s:
                before = max(before, abs(extra))
            elif t >= 2.0:
                after = max(after, extra)
        return before, after

    before, after = nod_depth(1.2)
    assert before == 0.0
    assert after >= 2.5  # a visible nod, down and back
    assert nod_depth(0.3)[1] < 0.5  # a short word is not a phrase


async def test_the_replica_nods_when_the_user_pauses():
    from pipecat.frames.frames import VADUserStoppedSpeakingFrame

    renderer = ReplicaRendererProcessor(replica=load_replica("ada"), params=ReplicaRendererParams(idle_fps=2))
    await run_test(
        Pipeline([renderer]),
        frames_to_send=[SleepFrame(0.3), VADUserStoppedSpeakingFrame(), SleepFrame(0.3)],
        expected_down_frames=None,
    )
    assert len(renderer._idle._nods) == 1
    start, depth = renderer._idle._nods[0]
    assert depth == IdleMotion.LISTENING_NOD_PX
    assert renderer._idle._nod_dy(start + IdleMotion.NOD_S / 2) == pytest.approx(depth)
