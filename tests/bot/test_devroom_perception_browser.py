"""The replica sees the person: real headless Chromium sends a face on its camera, the bot reports it.

The dev room app is the one ``run.py`` serves (``create_dev_room``), with a
perception persona (the coach, in echo mode so no LLM is needed); Chromium's
fake camera plays a Y4M video of a real photograph (scikit-image's astronaut)
or of an empty room. The bot asks the page for 320x240 at 2 fps, reads the
frames with the face models, and the page shows its cues in ``#perception``.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

import bot.rooms
from bot.engines import EmbeddedModels
from bot.rooms import create_dev_room
from personas import load_persona
from personas.model import Layers, ReplicaLayer
from tests import face_images
from tests.bot.conftest import serve_app
from tests.bot.test_devroom_browser import chromium_page, join_call

pytestmark = pytest.mark.browser

CUE_EVENTS = "window.devroom.events.filter(e => e.message.event_type === 'conversation.perception_cues').map(e => e.message.properties)"


def coach_in_echo_mode():
    """The coach's perception, in echo mode (no STT or LLM) and with no face rendered (less CPU)."""
    coach = load_persona("coach")
    return coach.model_copy(
        update={
            "pipeline_mode": "echo",
            "layers": Layers(perception=coach.layers.perception, replica=ReplicaLayer(replica_engine="off")),
        }
    )


def camera_video(tmp_path: Path, scene: str) -> Path:
    image = face_images.astronaut() if scene == "face" else face_images.no_one()
    frame = cv2.resize(image[0:480, 0:512] if scene == "face" else image, (320, 240), interpolation=cv2.INTER_AREA)
    # A little movement, as a live camera has: a one-pixel shift every other frame.
    frames = [np.roll(frame, i % 2, axis=1) for i in range(20)]
    return face_images.write_y4m(tmp_path / f"{scene}.y4m", frames, fps=10)


@pytest.mark.parametrize("scene", ["face", "nobody"])
async def test_the_bot_sees_whether_someone_is_there(settings, tmp_path: Path, monkeypatch, scene):
    persona = coach_in_echo_mode()
    monkeypatch.setattr(bot.rooms, "load_persona", lambda name: persona)
    video = camera_video(tmp_path, scene)
    silence = tmp_path / "silence.wav"
    soundfile.write(str(silence), np.zeros(16000 * 2, np.int16), 16000)
    models = EmbeddedModels(settings)
    app = create_dev_room(settings, persona_name="coach", models=models)
    try:
        async with serve_app(app) as url, chromium_page(tmp_path / "profile", silence, video) as page:
            await join_call(page, url)
            await page.wait_for_function("window.devroom.cameraSending", timeout=15_000)
            asked = await page.evaluate("window.devroom.cameraAsked")
            assert asked == {"type": "devroom.camera", "send": True, "framerate": 2, "width": 320, "height": 240}
            # The first cue holds for a second after the first frames are read.
            await page.wait_for_function(f"{CUE_EVENTS}.length > 0", timeout=30_000)
            cues = (await page.evaluate(CUE_EVENTS))[-1]
            shown_line = await page.text_content("#perception-line")
            shown_faces = await page.text_content("#perception-cues dd[data-cue='faces']")
            print(f"\n{scene}: cues {cues['cues']}; page shows {shown_line!r}")
            await page.click("#leave")
        if scene == "face":
            assert cues["cues"]["faces"]["value"] == 1
            assert cues["cues"]["expression"]["value"] == "smiling"
            assert "the user is smiling" in cues["line"]
            assert shown_line == cues["line"]
            assert shown_faces.startswith("1 ")
        else:
            assert cues["cues"]["faces"]["value"] == 0
            assert shown_line == cues["line"]
            assert shown_line.startswith("the user is not in view of the camera")
            assert "Is the user looking at the camera? no one is in view" in shown_line
    finally:
        await models.close()
