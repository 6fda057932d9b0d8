"""The one entry point.

    python run.py [--host H] [--port P] [--persona NAME]      local dev room (default)
    python run.py --room-url URL [--persona NAME]               join a Daily room (token: DAILY_TOKEN)
    python run.py --create-room [--persona NAME]                create a Daily room (DAILY_API_KEY) and join it
    python run.py talk --wav IN.wav --out OUT.wav|OUT.mp4 [--persona NAME] [--json]
    python run.py personas                                      list personas and engines
    python run.py replica create --image FACE.jpg --name NAME   a replica from a photo
    python run.py replica create --video TALK.mp4 --name NAME   a replica from a 10-120 s video
    python run.py serve [--host H] [--port P] [--no-warm]       the REST API (/v2) and conversation pages
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

STARTED_AT = time.monotonic()

SUBCOMMANDS = ("talk", "personas", "replica", "serve")


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def _configure_logging(level: str) -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=level.upper())


def _main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Open conversational video interface. Without a subcommand: the local dev room.",
        epilog="subcommands: talk, personas, replica create (see 'python run.py talk --help')",
    )
    parser.add_argument("--host", default="localhost", help="dev room host (default: localhost)")
    parser.add_argument("--port", type=int, default=7860, help="dev room port (default: 7860)")
    parser.add_argument("--persona", default="ava", help="persona module in personas/ (default: ava)")
    parser.add_argument("--room-url", help="join this Daily room instead of serving the dev room")
    parser.add_argument(
        "--token", help="Daily meeting token for --room-url (prefer DAILY_TOKEN in the environment: `ps` shows arguments)"
    )
    parser.add_argument(
        "--create-room", action="store_true",
        help="create a Daily room and a meeting token (1 h) with DAILY_API_KEY, print its URL and join it",
    )
    parser.add_argument(
        "--participant-left-timeout", type=float, default=None, metavar="S",
        help="Daily: end S seconds after the last person leaves (default 0)",
    )
    parser.add_argument(
        "--participant-absent-timeout", type=float, default=None, metavar="S",
        help="Daily: end if nobody joins within S seconds (default 300)",
    )
    parser.add_argument(
        "--max-call-duration", type=float, default=None, metavar="S", help="Daily: end after S seconds (default 3600)"
    )
    return parser


def _talk_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py talk", description="One recorded turn through the pipeline.")
    parser.add_argument("--wav", required=True, type=Path, help="the user's utterance (any rate, any channels)")
    parser.add_argument("--out", required=True, type=Path, help="reply as .wav (audio) or .mp4 (replica video)")
    parser.add_argument("--persona", default="ava")
    parser.add_argument("--json", action="store_true", help="print transcript, reply and timings as JSON")
    return parser


def _replica_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py replica", description="Manage replicas.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a replica from a photo of a face or a short video of a person")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="a photo showing one frontal face")
    source.add_argument(
        "--video", type=Path,
        help="10-120 s of one person talking and listening, face to camera: an idle loop and their own mouths",
    )
    create.add_argument("--name", required=True)
    sub.add_parser("list", help="list replicas")
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py serve", description="The REST API and the conversation pages.")
    parser.add_argument("--host", default="localhost", help="host (default: localhost)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--no-warm", action="store_true", help="do not load the default persona's engines before serving"
    )
    return parser


def cmd_serve(args, settings) -> int:
    import uvicorn

    from api import create_app
    from bot.engines import EmbeddedModels, check_persona
    from personas import load_persona

    async def serve() -> None:
        models = EmbeddedModels(settings)
        try:
            if not args.no_warm:
                # The first conversation finds its engines warm; one that cannot start is one line and exit 2.
                persona = load_persona(settings.cvi_default_persona)
                check_persona(persona, settings, name=settings.cvi_default_persona)
                await models.prepare(persona)
            app = create_app(settings, models=models)
            server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
            print(f"API: http://{args.host}:{args.port}/v2 (OpenAPI at /docs)", flush=True)
            await server.serve()
        finally:
            await models.close()

    asyncio.run(serve())
    return 0


def cmd_personas(settings) -> int:
    from personas import list_personas, load_persona

    for name in list_personas():
        p = load_persona(name)
        layers = p.layers
        print(
            f"{name:12} {p.persona_name!r:16} stt={layers.stt.stt_engine} llm={layers.llm.engine} "
            f"tts={layers.tts.tts_engine} replica={layers.replica.replica_engine}:{p.replica_id or '-'}"
        )
    return 0


def cmd_talk(args, settings) -> int:
    from bot.engines import EmbeddedModels
    from bot.talk import talk_once, write_wav

    suffix = args.out.suffix.lower()
    if suffix not in (".wav", ".mp4"):
        raise CliError(f"--out {args.out}: must end in .wav or .mp4")

    async def go():
        models = EmbeddedModels(settings)
        try:
            return await talk_once(args.wav, persona_name=args.persona, settings=settings, models=models)
        finally:
            await models.close()

    result = asyncio.run(go())
    if suffix == ".wav":
        write_wav(args.out, result.audio, result.sample_rate)
    else:
        from personas import load_persona
        from processors.replica.assets import load_replica
        from processors.replica.video_file import write_talking_video

        persona = load_persona(args.persona)
        replica = load_replica(persona.replica_id, settings.cvi_replicas_dir)
        write_talking_video(
            args.out, replica, result.audio, result.sample_rate, result.phonemes or None,
            fps=persona.layers.replica.fps, size=(persona.layers.replica.width, persona.layers.replica.height),
        )
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(f"reply written to {args.out}")
    return 0


def cmd_replica(args, settings) -> int:
    from processors.replica.assets import create_replica, list_replicas

    if args.action == "list":
        for replica_id in list_replicas(settings.cvi_replicas_dir):
            print(replica_id)
        return 0
    from processors.replica.mesh import open_mesh_finder

    finder = open_mesh_finder(cache_dir=settings.cvi_cache_dir)
    if args.video is not None:
        from processors.replica.video_replica import create_video_replica

        path = create_video_replica(args.video, args.name, settings.cvi_replicas_dir, mesh_finder=finder)
        print(f"replica created: {path}")
        return 0
    if finder is None:
        print("face models missing (run scripts/setup.sh): the replica gets no face mesh", file=sys.stderr)
    path = create_replica(args.image, args.name, settings.cvi_replicas_dir, mesh_finder=finder)
    print(f"replica created: {path}")
    return 0


def cmd_dev_room(args, settings) -> int:
    import asyncio

    import uvicorn

    from bot.engines import EmbeddedModels, check_persona
    from bot.rooms import create_dev_room
    from personas import load_persona

    async def serve() -> None:
        persona = load_persona(args.persona)
        check_persona(persona, settings, name=args.persona)
        models = EmbeddedModels(settings)
        try:
            # Engines start before the page is served: one that cannot start
            # (a llama-server that crashes on this CPU) is one line and exit 2.
            await models.prepare(persona)
            app = create_dev_room(settings, persona_name=args.persona, started_at=STARTED_AT, models=models)
            server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
            print(f"Dev room: open http://{args.host}:{args.port} (persona {args.persona})", flush=True)
            await server.serve()
        finally:
            await models.close()

    asyncio.run(serve())
    return 0


def cmd_daily(args, settings) -> int:
    from bot.daily import RoomTimeouts, create_room, run_daily_room
    from bot.rooms import validate_room_url

    timeouts = RoomTimeouts(
        **{
            name: value
            for name, value in (
                ("participant_left_timeout", args.participant_left_timeout),
                ("participant_absent_timeout", args.participant_absent_timeout),
                ("max_call_duration", args.max_call_duration),
            )
            if value is not None
        }
    )
    for name, value in vars(timeouts).items():
        if value < 0:
            raise CliError(f"--{name.replace('_', '-')} {value:g}: must be 0 or more seconds")
    if args.create_room:
        if args.room_url is not None:
            raise CliError("--create-room makes its own room; leave out --room-url")
        room = asyncio.run(create_room(settings))
        room_url, token = room.url, room.bot_token
        print(f"Daily room: {room_url} (share it; it expires in 1 h)", flush=True)
    else:
        room_url = validate_room_url(args.room_url)
        if args.token is not None:
            print("warning: --token is visible to anyone who can list processes; prefer DAILY_TOKEN", file=sys.stderr)
        token = args.token or (settings.daily_token.get_secret_value() if settings.daily_token else None)
    asyncio.run(
        run_daily_room(settings, room_url=room_url, token=token, persona_name=args.persona, timeouts=timeouts)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from bot.settings import get_settings

    settings = get_settings()
    _configure_logging(settings.cvi_log_level)
    # Errors a user can fix: one clear line, no traceback.
    from bot.daily import DailyJoinError, EngineKeyRejectedError
    from bot.engines import EngineConfigError, TavusRejectedError
    from bot.rooms import RoomUrlError
    from bot.settings import MissingKeyError
    from bot.talk import TalkInputError
    from personas import PersonaNotFoundError
    from processors.llm.llama_server import LlamaServerError
    from processors.weights import WeightsError

    user_errors = (
        CliError, EngineConfigError, RoomUrlError, MissingKeyError, TalkInputError,
        PersonaNotFoundError, LlamaServerError, WeightsError, TimeoutError, DailyJoinError, TavusRejectedError,
        EngineKeyRejectedError,
    )
    try:
        from processors.replica.assets import ReplicaCreationError

        user_errors += (ReplicaCreationError,)
    except ImportError:
        pass
    try:
        if argv and argv[0] in SUBCOMMANDS:
            command, rest = argv[0], argv[1:]
            if command == "personas":
                return cmd_personas(settings)
            if command == "talk":
                return cmd_talk(_talk_parser().parse_args(rest), settings)
            if command == "serve":
                return cmd_serve(_serve_parser().parse_args(rest), settings)
            return cmd_replica(_replica_parser().parse_args(rest), settings)
        args = _main_parser().parse_args(argv)
        if args.room_url is not None or args.create_room:
            return cmd_daily(args, settings)
        if args.token is not None:
            raise CliError("--token needs --room-url")
        return cmd_dev_room(args, settings)
    except user_errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
