"""Persona + transport -> one running conversation pipeline.

```
transport.input -> STT -> user turn (VAD + Smart Turn) -> LLM -> TTS
    -> replica renderer -> transport.output -> assistant context
```
"""

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from loguru import logger
from pipecat.frames.frames import (
    FunctionCallResultProperties,
    LLMRunFrame,
    OutputTransportMessageUrgentFrame,
    TTSSpeakFrame,
    VADParamsUpdateFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from bot.engines import (
    TAVUS_FPS,
    EmbeddedModels,
    build_llm,
    build_next_turn_warmer,
    build_spoken_reply,
    build_stt,
    build_tavus_video,
    build_tts,
    build_user_params,
    system_prompt,
    tools_schema,
    vad_params,
)
from bot.interactions import (
    CONTEXT_EVENTS,
    TurnObserver,
    TurnTimings,
    UnknownClientEvent,
    client_message_frames,
    envelope,
    system_instruction_frame,
    updated_context,
    updated_sensitivity,
)
from bot.perception import SCREEN_FRAMERATE, PerceptionLayer, build_perception
from bot.settings import Settings
from personas.model import Persona
from processors.llm.next_turn import NextTurnWarmer
from processors.turn.media_order import InputAudioEnd, media_after_data

# What a client may send when the persona's pipeline_mode is "echo".
ECHO_MODE_EVENTS = ("conversation.echo", "conversation.interrupt")

AUDIO_IN_SAMPLE_RATE = 16000
# How long an ending call waits for its CancelFrame to pass every processor
# before its tasks are cancelled anyway. The CancelFrame queues behind the
# microphone frames (system frames too), so on a starved CPU it can take
# seconds; the peer is gone by then and nothing may keep running for it.
CANCEL_TIMEOUT_S = 1.0
AUDIO_OUT_SAMPLE_RATE = 24000


@dataclass
class Conversation:
    """One call: who the replica is and what this call is about."""

    persona: Persona
    persona_name: str
    conversation_id: str = field(default_factory=lambda: "c" + uuid.uuid4().hex[:12])
    conversational_context: str = ""
    custom_greeting: str | None = None
    greet: bool = True

    @property
    def greeting(self) -> str | None:
        """What the replica says when the user joins (None: wait for the user)."""
        if not self.greet:
            return None
        return self.custom_greeting or self.persona.custom_greeting


def camera_in_framerate(persona: Persona) -> int | None:
    """Frames per second of the user's camera a layer looks at; None: no layer does.

    Only perception looks at the camera. With it off (the default) the
    transport receives no video, so not one camera frame is decoded.
    """
    if persona.layers.perception.perception_model == "off":
        return None
    return persona.layers.perception.fps


# The shutdown reason of a call ended because a cloud engine rejected its key.
KEY_REJECTED_PREFIX = "a cloud engine rejected its key:"
# How services word a rejected key when the exception carries no status (websocket handshakes).
KEY_REJECTED_TEXT = re.compile(
    r"\b(?:HTTP|status)[ :=]*(?:401|403)\b|unauthori[sz]ed|invalid[ _]api[ _]key|incorrect api key", re.IGNORECASE
)


def key_rejection(frame) -> str | None:
    """For an ``ErrorFrame`` that says a service's key was rejected (HTTP 401/403), what to tell the user."""
    exception = getattr(frame, "exception", None)
    status = getattr(exception, "status_code", None) or getattr(exception, "status", None)
    text = str(getattr(frame, "error", "") or "")
    if status in (401, 403) or KEY_REJECTED_TEXT.search(text):
        processor = getattr(frame, "processor", None)
        return f"{processor or 'a service'} answered {status or 'unauthorized'}; check its API key in .env"
    return None


def transport_media_params(persona: Persona, *, video_in: bool = True) -> dict[str, Any]:
    """Media settings every transport shares for this persona (TransportParams fields)."""
    replica = persona.layers.replica
    params: dict[str, Any] = {
        # Echo mode listens to nobody: it speaks what conversation.echo sends.
        "audio_in_enabled": persona.pipeline_mode != "echo",
        "audio_in_sample_rate": AUDIO_IN_SAMPLE_RATE,
        "audio_out_enabled": True,
        "audio_out_sample_rate": AUDIO_OUT_SAMPLE_RATE,
    }
    if replica.replica_engine != "off":
        params.update(
            video_out_enabled=True,
            video_out_is_live=True,
            video_out_width=replica.width,
            video_out_height=replica.height,
            video_out_framerate=replica.fps,
        )
    if replica.replica_engine == "tavus":
        # Tavus sends the replica's video at its own rate: the output paces at
        # that rate (scaling to the persona's size) and plays its audio as it comes.
        params.update(video_out_framerate=TAVUS_FPS, audio_out_auto_silence=False)
    framerate = camera_in_framerate(persona)
    if video_in and framerate is not None:
        from pipecat.transports.base_transport import VideoInSourceParams

        params.update(
            video_in_enabled=True,
            video_in_sources={
                "camera": VideoInSourceParams(framerate=framerate),
                # A shared screen, when the peer sends one, is read for its text.
                "screenVideo": VideoInSourceParams(framerate=SCREEN_FRAMERATE),
            },
        )
    return params


def build_replica(persona: Persona, settings: Settings, *, pixel_format: str = "RGB") -> FrameProcessor | None:
    """Our CPU renderer for a local replica (frames in ``pixel_format``), or None when the persona shows no face."""
    replica = persona.layers.replica
    if replica.replica_engine != "local":
        return None
    from processors.replica.assets import load_replica
    from processors.replica.renderer import ReplicaRendererParams, ReplicaRendererProcessor

    assets = load_replica(persona.replica_id, settings.cvi_replicas_dir)
    if replica.width % 2 or replica.height % 2:
        pixel_format = "RGB"  # YUV 4:2:0 needs an even size; the transports take RGB too
    return ReplicaRendererProcessor(
        replica=assets,
        params=ReplicaRendererParams(
            width=replica.width,
            height=replica.height,
            fps=replica.fps,
            idle_fps=replica.listening_fps,
            pixel_format=pixel_format,
        ),
    )


class ConversationBot:
    """Builds and runs the pipeline of one conversation on a given transport.

    Args:
        conversation: The call's persona and context.
        transport: Any pipecat transport (SmallWebRTC, Daily, or the file
            transport of ``talk``); ``input()``/``output()`` are used.
        settings: Process settings.
        models: The process's shared embedded engines.
        render_video: Put the real-time replica renderer in the pipeline.
        on_turn_complete: Called with each turn's timings.
        video_format: The renderer's frames: ``RGB`` (any transport), or what
            ``bot.webrtc_video.send_replica_video_over`` returned for the
            transport's connection.
    """

    def __init__(
        self,
        *,
        conversation: Conversation,
        transport,
        settings: Settings,
        models: EmbeddedModels,
        render_video: bool = True,
        on_turn_complete=None,
        extra_observers: list | None = None,
        video_format: str = "RGB",
    ):
        self.conversation = conversation
        self._video_format = video_format
        self._transport = transport
        self._settings = settings
        self._models = models
        self._render_video = render_video
        self._on_turn_complete = on_turn_complete
        self._extra_observers = extra_observers or []
        self._session: aiohttp.ClientSession | None = None
        self._next_turn: NextTurnWarmer | None = None
        self._llm_slot: int | None = None  # the embedded LLM server's slot this conversation has
        self.worker: PipelineWorker | None = None
        self.observer: TurnObserver | None = None
        self.processors: list[FrameProcessor] = []
        self.tavus: FrameProcessor | None = None
        self.perception: PerceptionLayer | None = None
        self._analysis_task: asyncio.Future | None = None
        self.shutdown_reason: str | None = None
        stt = conversation.persona.layers.stt
        # The turn-taking sensitivities now (conversation.sensitivity changes them live).
        self.sensitivity = {
            "participant_pause_sensitivity": stt.participant_pause_sensitivity,
            "participant_interrupt_sensitivity": stt.participant_interrupt_sensitivity,
        }

    @property
    def turns(self) -> list[TurnTimings]:
        """Timings of every turn so far."""
        return self.observer.turns if self.observer else []

    async def _send(self, message: dict[str, Any]) -> None:
        if self.worker is not None:
            await self.worker.queue_frame(OutputTransportMessageUrgentFrame(message=message))

    async def send_to_client(self, message: dict[str, Any]) -> None:
        """An app message to the client, on the call's data channel."""
        await self._send(message)

    async def handle_client_message(self, message: Any) -> None:
        """Carry out one client -> replica app message; bad ones are logged, not fatal."""
        conversation = self.conversation
        event_type = message.get("event_type") if isinstance(message, dict) else None
        if conversation.persona.pipeline_mode == "echo" and event_type not in ECHO_MODE_EVENTS:
            logger.warning(
                f"{self}: ignored client message {event_type!r}: pipeline_mode='echo' takes only "
                f"{', '.join(ECHO_MODE_EVENTS)}"
            )
            return
        try:
            if event_type in CONTEXT_EVENTS:
                conversation.conversational_context = updated_context(message, conversation.conversational_context)
                frames = [system_instruction_frame(system_prompt(conversation.persona, conversation.conversational_context))]
            elif event_type == "conversation.sensitivity":
                self.sensitivity = updated_sensitivity(message, self.sensitivity)
                params = vad_params(
                    pause=self.sensitivity["participant_pause_sensitivity"],
                    interrupt=self.sensitivity["participant_interrupt_sensitivity"],
                )
                # Downstream to the user aggregator's VAD, which takes it from the next audio frame on.
                frames = [VADParamsUpdateFrame(params=params)]
                logger.info(f"{self}: turn-taking sensitivity now {self.sensitivity}")
            else:
                frames = client_message_frames(message)
        except (UnknownClientEvent, ValueError) as e:
            logger.warning(f"{self}: ignored client message: {e}")
            return
        if self.worker is not None:
            await self.worker.queue_frames(frames)

    async def build(self) -> PipelineWorker:
        """Assemble the pipeline and its worker (does not run it)."""
        persona = self.conversation.persona
        layers = persona.layers
        tts = build_tts(persona, self._settings, self._models)
        self.perception = build_perception(persona, self._settings, conversation_id=self.conversation.conversation_id)
        aggregators = None
        if persona.pipeline_mode == "echo":
            # The replica speaks only what conversation.echo sends: no STT, no LLM.
            processors: list[FrameProcessor] = [self._transport.input(), tts]
            if self.perception is not None:
                processors.insert(1, self.perception.tap)
        else:
            stt = build_stt(persona, self._settings, self._models)
            system = system_prompt(persona, self.conversation.conversational_context)
            self._llm_slot = self._models.claim_llm_slot(persona)
            llm = build_llm(persona, self._settings, self._models, system_instruction=system, slot=self._llm_slot)
            tools = persona.layers.llm.tools
            context = LLMContext(tools=tools_schema(tools)) if tools else LLMContext()
            if tools:
                # The client runs the persona's tools: each call goes to it as conversation.tool_call.
                llm.register_function(None, self._on_tool_call)
            aggregators = LLMContextAggregatorPair(context, user_params=build_user_params(persona))
            self._next_turn = build_next_turn_warmer(persona, llm)
            if self._next_turn is not None:
                # Once the reply is in the context, the start of the user's next message goes into the LLM's cache.
                warmer = self._next_turn
                cues = self.perception.context if self.perception is not None else None

                @aggregators.assistant().event_handler("on_assistant_turn_stopped")
                async def _warm_next_turn(_aggregator, _message):
                    if cues is not None:
                        # The next request carries the camera lines given with earlier
                        # turns (a reply started early wrote its turn without one): so must the warm-up.
                        cues.restore_given_lines(context)
                    warmer.schedule(context)

            spoken = build_spoken_reply(persona)  # whole sentences, no markup, never the persona's name for the user
            # The transcript is not held behind the user's audio queued at the user aggregator;
            # past it nothing reads that audio.
            user = media_after_data(aggregators.user())
            processors = [self._transport.input(), stt, user, InputAudioEnd(), llm, spoken, tts]
            if self.perception is not None:
                # The camera tap first; the cue line goes into the context the LLM gets.
                processors.insert(1, self.perception.tap)
                processors.insert(processors.index(llm), self.perception.context)
                if self.perception.answers is not None:
                    processors.insert(processors.index(llm) + 1, self.perception.answers)
        if layers.replica.replica_engine == "tavus":
            self._session = aiohttp.ClientSession()
            self.tavus = build_tavus_video(persona, self._settings, self._session)
            processors.append(self.tavus)
        elif self._render_video:
            renderer = build_replica(persona, self._settings, pixel_format=self._video_format)
            if renderer is not None:
                processors.append(renderer)
        processors.append(self._transport.output())
        if aggregators is not None:
            processors.append(aggregators.assistant())
        self.processors = processors

        self.observer = TurnObserver(
            conversation_id=self.conversation.conversation_id,
            send=self._send,
            on_turn_complete=self._on_turn_complete,
        )
        self.worker = PipelineWorker(
            Pipeline(processors),
            params=PipelineParams(
                audio_in_sample_rate=AUDIO_IN_SAMPLE_RATE,
                audio_out_sample_rate=AUDIO_OUT_SAMPLE_RATE,
                enable_metrics=True,
            ),
            conversation_id=self.conversation.conversation_id,
            observers=[self.observer, *self._extra_observers],
            enable_rtvi=False,
            idle_timeout_secs=None,
            cancel_timeout_secs=CANCEL_TIMEOUT_S,
        )
        self.worker.event_handler("on_pipeline_error")(self._on_pipeline_error)
        return self.worker

    async def _on_tool_call(self, params) -> None:
        """The LLM called one of the persona's tools: the client runs it (``conversation.tool_call``).

        The replica does not wait for it: the client may answer with
        ``conversation.append_llm_context`` (and ``conversation.respond`` or
        ``conversation.echo`` to speak about it).
        """
        logger.info(f"{self}: tool call {params.function_name} sent to the client")
        await self._send(
            envelope(
                "conversation.tool_call",
                self.conversation.conversation_id,
                {
                    "name": params.function_name,
                    "arguments": json.dumps(params.arguments),
                    "tool_call_id": params.tool_call_id,
                },
                self.observer.inference_id if self.observer else None,
            )
        )
        await params.result_callback(
            {"status": "sent to the client, which runs it and may add its result to the context"},
            properties=FunctionCallResultProperties(run_llm=False),
        )

    async def _on_pipeline_error(self, _worker, frame) -> None:
        # A cloud engine that rejects its key would leave a mute bot: end the call instead.
        rejected = key_rejection(frame)
        processor = getattr(frame, "processor", None)
        if rejected:
            await self.stop(f"{KEY_REJECTED_PREFIX} {rejected}")
        elif processor is not None and not processor.is_usable:
            # An engine that cannot recover: the call ends rather than going on without it.
            await self.stop(f"{processor} can no longer do its job")

    async def greet(self) -> None:
        """Say the greeting, or let the LLM open when there is none."""
        if self.worker is None:
            return
        greeting = self.conversation.greeting
        if self.conversation.persona.pipeline_mode == "echo":
            return  # in echo mode the replica says only what the client sends
        if greeting:
            await self.worker.queue_frame(TTSSpeakFrame(greeting, append_to_context=True))

    async def run(self) -> None:
        """Run until the pipeline ends (the peer leaves, or ``stop()``)."""
        if self.worker is None:
            await self.build()
        assert self.worker is not None
        try:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(self.worker)
            await runner.run()
        finally:
            if self._next_turn is not None:
                await self._next_turn.close()
            self._models.release_llm_slot(self._llm_slot)
            self._llm_slot = None
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def open_remote_sessions(self) -> None:
        """Start the paid remote parts (the Tavus conversation) once someone is there to see them."""
        if self.tavus is not None:
            await self.tavus.open_conversation()

    async def stop(self, reason: str = "stopped") -> None:
        """End the call now; the first reason given is the one recorded."""
        if self.shutdown_reason is None:
            self.shutdown_reason = reason
            logger.info(f"{self}: ending: {reason}")
            reports = self.perception is not None and self.perception.has_analysis
            if reports:
                # A vision LLM's analysis is asked for now, while the call tears
                # down; perception_analysis() gets the same answer afterwards.
                self._analysis_task = asyncio.ensure_future(self.perception.analysis())
            analysis = self.perception.tap.analysis() if reports else None
            if analysis is not None:
                # Best effort: the peer may be gone already (the API sends the webhook).
                await self._send({
                    "message_type": "conversation",
                    "event_type": "conversation.perception_analysis",
                    "conversation_id": self.conversation.conversation_id,
                    "properties": analysis,
                })
        if self.worker is not None:
            await self.worker.cancel(reason=reason)

    async def perception_analysis(self) -> dict[str, Any] | None:
        """The end-of-call perception analysis (``perception_analysis_queries`` answered).

        None with perception off, or when no camera frame was read and the
        persona asked nothing. Landmarks answer at once; a vision LLM is asked
        once (at most 15 s, never raises).
        """
        if self.perception is None or not self.perception.has_analysis:
            return None
        return await self.perception.analysis()

    async def respond(self) -> None:
        """Ask the LLM for a reply to the context as it stands."""
        if self.worker is not None:
            await self.worker.queue_frame(LLMRunFrame())

    def __str__(self) -> str:
        return f"ConversationBot({self.conversation.conversation_id})"
