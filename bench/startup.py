"""Time from `python run.py` to a ready dev room, cold and warm, and memory once ready.

    .venv/bin/python bench/startup.py [--runs 3] [--persona ava] [--cold]

"Ready" is the moment the dev room answers /api/health after the models are
loaded and the persona's system prompt is in the LLM's cache (the app logs
"Dev room ready" just before serving). --cold drops the OS page cache before
the first run (needs root), so weights are read from disk again. Memory is
the resident set of the app and its llama-server child, summed. Prints a
table and writes bench/results/startup.json.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def one_start(persona: str) -> tuple[float, float]:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "run.py", "--port", str(port), "--host", "127.0.0.1", "--persona", persona],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"run.py exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > 180:
                raise TimeoutError("not ready in 180 s")
            time.sleep(0.05)
        ready = time.monotonic() - started
        time.sleep(1.0)
        return ready, tree_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="warm runs")
    parser.add_argument("--persona", default="ava")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before a first, cold run")
    args = parser.parse_args()
    rows = []
    if args.cold:
        if not drop_page_cache():
            print("cannot drop the page cache (not root?): no cold run", file=sys.stderr)
        else:
            ready, rss = one_start(args.persona)
            rows.append({"run": "cold", "ready_s": ready, "rss_mb": rss})
    for i in range(args.runs):
        ready, rss = one_start(args.persona)
        rows.append({"run": f"warm {i + 1}", "ready_s": ready, "rss_mb": rss})
    print(f"{'run':8} {'ready (s)':>10} {'memory (MB)':>12}")
    for r in rows:
        print(f"{r['run']:8} {r['ready_s']:10.2f} {r['rss_mb']:12.0f}")
    warm = [r["ready_s"] for r in rows if r["run"].startswith("warm")]
    if warm:
        print(f"{'warm med':8} {statistics.median(warm):10.2f}")
    out = ROOT / "bench" / "results" / "startup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"persona": args.persona, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
