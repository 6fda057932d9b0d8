"""A shared screen's text, read by Tesseract (Debian's tesseract-ocr), reaches the cue line."""

import shutil

import cv2
import numpy as np
import pytest
from pipecat.tests.utils import SleepFrame, run_test

from processors.perception.cues import FrameReading
from processors.perception.processor import PerceptionParams, PerceptionProcessor, read_screen_text
from tests.processors.test_perception import image_frame

pytestmark = pytest.mark.models

LINES = ["Quarterly sales review", "Revenue grew twelve percent", "Next step: hire two engineers"]


def screenshot() -> np.ndarray:
    """A slide as a screen share shows it: dark text on white, 960x540."""
    image = np.full((540, 960, 3), 255, np.uint8)
    for i, line in enumerate(LINES):
        cv2.putText(image, line, (60, 140 + i * 110), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (20, 20, 20), 3, cv2.LINE_AA)
    return image


@pytest.fixture(autouse=True)
def tesseract():
    if shutil.which("tesseract") is None:
        pytest.fail("tesseract missing: scripts/setup.sh installs tesseract-ocr")


def test_the_text_of_a_slide_is_read():
    text = read_screen_text(screenshot()).lower()
    for line in LINES:
        assert line.lower() in text, text


async def test_a_screen_share_frame_reaches_the_cue_line(settings):
    tap = PerceptionProcessor(
        params=PerceptionParams(cache_dir=settings.cvi_cache_dir, ocr_interval_s=0.0,
                                ambient_awareness_queries=["What is on the shared screen?"]),
        finder=object(),  # no camera frame comes: the face models are not needed
    )
    await run_test(tap, frames_to_send=[image_frame(screenshot(), source="screenVideo"), SleepFrame(3.0)],
                   expected_down_frames=None)
    assert tap.screen_text is not None and "Revenue grew twelve percent" in tap.screen_text
    # The line needs a face cue first (one held a second); the screen text is part of it and of the ambient answer.
    for at in (0.0, 0.5, 1.0):
        tap.tracker.update(FrameReading(at=at, faces=1, luma=120.0))
    line = tap.cue_line()
    assert 'their shared screen reads "Quarterly sales review' in line
    assert "What is on the shared screen? the shared screen reads: Quarterly" in line
