"""The baseline for bench/latency.py: a plain pipecat pipeline of stock services.

Same weights and the same llama.cpp server binary as ours, same dev room
signalling, but pipecat's own services with their default settings:
``WhisperSTTService`` (segmented, faster-whisper's 30 s window, beam search),
``OpenAILLMService`` on the llama.cpp server, ``PiperTTSService``, Silero VAD
with default parameters and the default turn strategies (Smart Turn v3), no
replica video. Our ``TurnObserver`` only watches, so the benchmark gets the
same per-stage events from both.

    .venv/bin/python bench/baseline_bot.py --port 7861
"""

import argparse
import asyncio
import sys
from contextlib import asynccontextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402
from pipecat.audio.vad.silero import SileroVADAnalyzer  # noqa: E402
from pipecat.frames.frames import OutputTransportMessageUrgentFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.openai.llm import OpenAILLMService  # noqa: E402
from pipecat.services.piper.tts import PiperTTSService  # noqa: E402
from pipecat.services.whisper.stt import WhisperSTTService  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from bot.devroom import create_devroom_app  # noqa: E402
from bot.engines import EmbeddedModels  # noqa: E402
from bot.interactions import TurnObserver  # noqa: E402
from bot.settings import get_settings  # noqa: E402
from personas import load_persona  # noqa: E402


def baseline_app(persona_name: str = "ava"):
    settings = get_settings()
    persona = load_persona(persona_name)
    models = EmbeddedModels(settings)

    async def on_connection(connection) -> None:
        transport = SmallWebRTCTransport(
            webrtc_connection=connection,
            params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
        )
        voice = models.piper_path(persona)
        stt = WhisperSTTService(settings=WhisperSTTService.Settings(model=models.whisper_path(persona)))
        llm = OpenAILLMService(
            api_key="local",
            base_url=models.llm_base_url,
            settings=OpenAILLMService.Settings(model="local", system_instruction=persona.full_system_prompt()),
        )
        tts = PiperTTSService(download_dir=voice.parent, settings=PiperTTSService.Settings(voice=voice.stem))
        context = LLMContext()
        aggregators = LLMContextAggregatorPair(
            context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
        )
        worker: PipelineWorker | None = None

        async def send(message):
            if worker is not None:
                await worker.queue_frame(OutputTransportMessageUrgentFrame(message=message))

        worker = PipelineWorker(
            Pipeline([transport.input(), stt, aggregators.user(), llm, tts, transport.output(), aggregators.assistant()]),
            params=PipelineParams(enable_metrics=True),
            observers=[TurnObserver(conversation_id="baseline", send=send)],
            enable_rtvi=False,
            idle_timeout_secs=None,
        )

        @transport.event_handler("on_client_disconnected")
        async def _left(transport, client):
            await worker.cancel(reason="peer left")

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    app = create_devroom_app(on_connection=on_connection)
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_):
        await models.prepare(persona)
        try:
            async with original(app_):
                yield
        finally:
            await models.close()

    app.router.lifespan_context = lifespan
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--persona", default="ava")
    args = parser.parse_args()
    uvicorn.run(baseline_app(args.persona), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))
    sys.exit(main())
