"""Child-process plumbing for the embedded vLLM: free loopback ports, process groups, the
parent-death signal, CPU binding, and vLLM's command line and environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

# Without disable_any_whitespace a 135M model pads JSON with whitespace (which the grammar
# allows) until max_tokens and the output is cut off.
_STRUCTURED_OUTPUTS_CONFIG = json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now. There is a window between closing this socket and the
    caller binding the port; acceptable on loopback, and a lost race looks like a failed
    start that the caller sees."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_bind_spec(cpus: set[int] | None = None) -> str:
    """Format the CPUs this process may use as vLLM's ``VLLM_CPU_OMP_THREADS_BIND`` ranges.

    Uses the affinity mask rather than ``os.cpu_count()`` so that containers / taskset limits
    are respected; binding OpenMP threads to CPUs we may not run on fails at startup.
    """
    cores = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if not cores:
        raise ValueError("no CPUs available")
    ranges: list[str] = []
    start = prev = cores[0]
    for core in cores[1:]:
        if core != prev + 1:
            ranges.append(f"{start}-{prev}" if start != prev else str(start))
            start = core
        prev = core
    ranges.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(ranges)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The pgid was recycled by a process we do not own: nothing of ours is left there.
        return False
    return True


# Runs in a fresh interpreter that then execs the real command: the parent-death signal set
# here survives exec. A preexec_fn would run Python in a child forked from a process whose
# gRPC threads may hold locks (a demo start segfaulted that way, code -11, with "Other threads
# are currently calling into gRPC, skipping fork() handlers"); without one, subprocess forks
# and execs in C.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """`argv` run so that it gets SIGTERM when this process dies, even by SIGKILL."""
    return [sys.executable, "-c", _DIE_WITH_PARENT, *argv]


def vllm_command(
    model_path: Path,
    served_model_name: str,
    host: str,
    port: int,
    max_model_len: int,
    extra_args: Sequence[str],
) -> list[str]:
    """The argv that starts vLLM's OpenAI-compatible server."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_path),
        "--served-model-name",
        served_model_name,
        "--host",
        host,
        "--port",
        str(port),
        # CUDA-graph-style compilation costs ~1-2 min at startup on CPU for no gain at
        # this model size (26-29 s to ready with it off vs 83-136 s).
        "--enforce-eager",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        str(max_model_len),
        "--structured-outputs-config",
        _STRUCTURED_OUTPUTS_CONFIG,
        # Our own /health probes every 10 s would otherwise dominate the log.
        "--disable-uvicorn-access-log",
        *extra_args,
    ]


def vllm_environment(kv_cache_gib: float) -> dict[str, str]:
    """The environment vLLM starts with."""
    env = dict(os.environ)
    # CPU placement may be overridden by the operator (e.g. to keep a core free for the
    # gRPC service): OpenMP threads spin-wait at barriers, so a pinned vLLM thread that
    # shares its core with another busy process slows every forward pass many times over.
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_bind_spec())
    # vLLM's default reserves a core for its frontend; with 2 cores that halves throughput.
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.update(
        {
            "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
            # Everything is local; a hub lookup would hang or fail without internet.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            # Unbuffered, so the log tail in our error messages is current.
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


async def probe_ok(client: httpx.AsyncClient, url: str, model_name: str | None = None) -> bool:
    """True if `url` answers 200 (and, with `model_name`, lists that model: the free port is
    chosen before vLLM binds it, so this makes sure a 200 comes from our server and not from
    whatever else grabbed the port meanwhile)."""
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    if model_name is None:
        return True
    try:
        models = response.json().get("data", [])
        return any(m.get("id") == model_name for m in models)
    except (ValueError, AttributeError, TypeError):
        return False


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log file (read from its last 64 KiB)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]
