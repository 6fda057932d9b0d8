"""Does the replica's voice leave on time when the cores are busy? aiortc's thread-pool Opus encoding against encoding on the loop.

A real aiortc peer connection pair on loopback, in one process, as in the dev
room: pipecat's own audio track (``RawAudioTrack``, fed 24 kHz speech-like
audio as the TTS does) and a 512x512 video track at 25 fps, VP8-encoded by
aiortc in the thread pool as the replica's is. Load is added as on a
2-core machine during a reply: ``--hogs`` processes spinning at the same
priority (the LLM, other programs) and ``--gil-threads`` Python threads doing
pure-Python work in short bursts (the pipeline's own frames, the renderer).

Each arm runs ``--seconds`` per round, arms interleaved, on a fresh pair. For
every audio RTP packet the time it is handed to the socket is compared with
its RTP timestamp: the delay beyond the smallest in the last 2 s is the
jitter a receiver sees on loopback (Chrome's jitter buffer grows to cover
it). Prints median / p95 / p99 / max of that delay, the share of packets more
than 60 ms late, and packets per second (50 when on time).

    python bench/audio_pacing.py [--rounds 3] [--seconds 8] [--hogs 2] [--gil-threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiortc import RTCPeerConnection, VideoStreamTrack  # noqa: E402

from bot.webrtc_audio import encode_audio_on_the_loop  # noqa: E402
from pipecat.transports.smallwebrtc.transport import RawAudioTrack  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "audio_pacing.json"
SAMPLE_RATE = 24000
LATE_MS = 60.0
ARMS = ("thread pool", "on the loop")


def _spin() -> None:
    while True:
        pass


class _Frames(VideoStreamTrack):
    """512x512 frames that change a little each time, as a talking head does."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self._base = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        self._n += 1
        img = self._base.copy()
        img[300:380, 200:312] = (self._n * 7) % 255  # the "mouth" moves
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def _speech(seconds: float) -> bytes:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllables
    wave = 8000 * envelope * np.sin(2 * np.pi * 180 * t)
    return wave.astype(np.int16).tobytes()


def _gil_work(stop: threading.Event) -> None:
    """Pure-Python work in bursts of about 20 ms, then a short rest."""
    while not stop.is_set():
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            sum(i * i for i in range(200))
        time.sleep(0.005)


async def _connect(arm: str) -> tuple[RTCPeerConnection, RTCPeerConnection, RawAudioTrack]:
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    audio = RawAudioTrack(SAMPLE_RATE)
    sender_pc.addTransceiver("audio", direction="sendonly")
    sender_pc.addTransceiver("video", direction="sendonly")

    @receiver_pc.on("track")
    def on_track(track) -> None:
        async def drain() -> None:
            try:
                while True:
                    await track.recv()
            except Exception:
                pass

        asyncio.ensure_future(drain())

    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(sender_pc.localDescription)
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(receiver_pc.localDescription)
    if arm == "on the loop":
        encode_audio_on_the_loop(sender_pc)
    transceivers = sender_pc.getTransceivers()
    transceivers[0].sender.replaceTrack(audio)  # as pipecat does on connect
    transceivers[1].sender.replaceTrack(_Frames())
    return sender_pc, receiver_pc, audio


async def run_arm(arm: str, seconds: float) -> dict:
    sender_pc, receiver_pc, audio = await _connect(arm)
    audio_sender = sender_pc.getTransceivers()[0].sender
    dtls = audio_sender.transport
    sent: list[tuple[float, int]] = []
    send_rtp = dtls._send_rtp

    async def recording_send(data: bytes) -> None:
        if len(data) >= 12 and struct.unpack("!I", data[8:12])[0] == audio_sender._ssrc:
            sent.append((time.monotonic(), struct.unpack("!I", data[4:8])[0]))
        await send_rtp(data)

    dtls._send_rtp = recording_send
    while sender_pc.connectionState != "connected":
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    audio.add_audio_bytes(_speech(seconds))
    sent.clear()
    await asyncio.sleep(seconds)
    await sender_pc.close()
    await receiver_pc.close()
    return _jitter(sent)


def _jitter(sent: list[tuple[float, int]]) -> dict:
    if len(sent) < 10:
        return {"packets": len(sent)}
    times = np.array([s[0] for s in sent])
    stamps = np.unwrap(np.array([s[1] for s in sent], dtype=np.float64), period=2**32) / 48000
    delay = (times - times[0]) - (stamps - stamps[0])
    relative = np.empty_like(delay)
    window: deque[int] = deque()
    for i in range(len(delay)):  # delay beyond the smallest in the last 2 s
        while window and delay[window[-1]] >= delay[i]:
            window.pop()
        window.append(i)
        while times[window[0]] < times[i] - 2.0:
            window.popleft()
        relative[i] = delay[i] - delay[window[0]]
    return {
        "packets": len(sent),
        "per_s": len(sent) / (times[-1] - times[0]),
        "ms": (relative * 1000).tolist(),
    }


def summarise(runs: list[dict]) -> dict:
    ms = np.concatenate([np.array(r["ms"]) for r in runs if "ms" in r])
    return {
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "late": float((ms > LATE_MS).mean()),
        "per_s": float(np.mean([r["per_s"] for r in runs if "per_s" in r])),
    }


def _row(name: str, row: dict) -> str:
    return (
        f"{name:<12} {row['median']:7.1f} {row['p95']:7.1f} {row['p99']:7.1f} {row['max']:7.1f} "
        f"{row['late'] * 100:6.1f}% {row['per_s']:7.1f}"
    )


async def main_async(args) -> dict[str, dict]:
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            runs[arm].append(await run_arm(arm, args.seconds))
            print(f"  round {r + 1}: {_row(arm, summarise(runs[arm][-1:]))}", flush=True)
    return {arm: summarise(results) for arm, results in runs.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--hogs", type=int, default=2, help="processes spinning at the same priority")
    parser.add_argument("--gil-threads", type=int, default=1, help="threads doing pure-Python work in bursts")
    args = parser.parse_args(argv)

    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    stop = threading.Event()
    threads = [threading.Thread(target=_gil_work, args=(stop,), daemon=True) for _ in range(args.gil_threads)]
    for thread in threads:
        thread.start()
    try:
        table = asyncio.run(main_async(args))
    finally:
        stop.set()
        for hog in hogs:
            hog.terminate()

    print(
        f"\nvoice packets sent vs their stamps, ms beyond the least delay of the last 2 s "
        f"({os.cpu_count()} CPUs, {args.hogs} spinning processes, {args.gil_threads} Python threads, "
        f"VP8 video at 25 fps; {args.rounds} x {args.seconds:.0f} s per arm)"
    )
    print(f"{'arm':<12} {'median':>7} {'p95':>7} {'p99':>7} {'max':>7} {'>60ms':>7} {'pkts/s':>7}")
    for arm, row in table.items():
        print(_row(arm, row))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "arms": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
