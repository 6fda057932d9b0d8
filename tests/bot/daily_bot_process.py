"""``run.py`` in a child process, with daily-python's CallClient faked (``fake_daily``).

    FAKE_DAILY_SCRIPT='{"room_url": ..., "people": [...], "refuse": {...}}' \\
        python tests/bot/daily_bot_process.py --room-url URL --persona echo

Everything else is the real program: its argument parsing, settings, signal
handling and exit codes. ``FAKE_PERSONA=tavus_echo_test`` adds a persona
(echo mode, piper, Tavus face) that needs no cloud engine but Tavus.
"""

import json
import os
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _add_test_persona() -> None:
    import personas
    from personas.model import Layers, Persona, ReplicaLayer, TTSLayer
    from tests.bot.fake_tavus import REPLICA

    module = types.ModuleType("personas.tavus_echo_test")
    module.PERSONA = Persona(
        persona_name="Tavus echo test",
        system_prompt="unused in echo mode",
        pipeline_mode="echo",
        layers=Layers(
            tts=TTSLayer(tts_engine="piper"),
            replica=ReplicaLayer(replica_engine="tavus", replica_id=REPLICA, width=1280, height=720),
        ),
    )
    sys.modules[module.__name__] = module
    shipped = personas.list_personas
    personas.list_personas = lambda: sorted([*shipped(), "tavus_echo_test"])


def main() -> int:
    from tests.bot.fake_daily import install_for_process

    install_for_process(json.loads(os.environ.get("FAKE_DAILY_SCRIPT", "{}")))
    if os.environ.get("FAKE_PERSONA") == "tavus_echo_test":
        _add_test_persona()
    os.chdir(ROOT)
    import run

    return run.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
