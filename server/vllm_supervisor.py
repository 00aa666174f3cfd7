"""Run the embedded vLLM OpenAI-compatible server as a child process and keep it alive.

vLLM is started as a separate process (not in-process) because it owns its own event loop,
engine-core subprocess and several GB of memory; a crash or OOM there must not take the gRPC
service down, and we must be able to kill and restart it as a unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import httpx

from server.processes import (
    dying_with_parent,
    free_port,
    kill_group,
    probe_ok,
    tail_lines,
    vllm_command,
    vllm_environment,
)

__all__ = ["VllmSupervisor"]

logger = logging.getLogger(__name__)


_READY_POLL_INTERVAL_S = 0.5
_LIVENESS_INTERVAL_S = 10.0
# /health answers within milliseconds normally; a generous timeout avoids killing a server
# that is merely busy with a long batch on two cores.
_PROBE_TIMEOUT_S = 5.0
_LIVENESS_FAILURES_BEFORE_KILL = 3
_BACKOFF_INITIAL_S = 1.0
_BACKOFF_MAX_S = 30.0
_MAX_RESTARTS_WITHOUT_READY = 5
_LOG_TAIL_LINES = 30


class VllmSupervisor:
    """Starts ``vllm.entrypoints.openai.api_server`` on loopback and restarts it if it dies.

    Lifecycle: ``await start()`` (returns at once), ``await wait_ready(timeout)``, use
    ``base_url``; ``await stop()`` when done. All methods must be called from one event loop.
    """

    def __init__(
        self,
        model_path: Path,
        served_model_name: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        max_model_len: int = 2048,
        kv_cache_gib: int = 1,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        on_state_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._model_path = Path(model_path)
        self._served_model_name = served_model_name
        self._host = host
        self._port = port
        self._max_model_len = max_model_len
        self._kv_cache_gib = kv_cache_gib
        self._log_path = Path(log_path) if log_path is not None else None
        self._extra_args = tuple(extra_args)
        self._on_state_change = on_state_change

        self._proc: asyncio.subprocess.Process | None = None
        self._finalizer: weakref.finalize[[int, int], VllmSupervisor] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_lock = asyncio.Lock()
        self._stopping = False
        self._ready = False
        self._ever_ready = False
        self._failure: str | None = None
        self._restarts = 0
        # Replaced on every transition, so waiters wake up and re-check the state.
        self._changed = asyncio.Event()

    # ----------------------------------------------------------------------------- properties

    @property
    def ready(self) -> bool:
        """True while the server answers; False while (re)starting, after a crash, or stopped."""
        return self._ready

    @property
    def served_model_name(self) -> str:
        return self._served_model_name

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("port is chosen by start()")
        return self._port

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``; the port survives restarts."""
        return f"http://{self._host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """PID (and process-group id) of the current vLLM process, if one is running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def restarts(self) -> int:
        """Number of times the server was restarted after an unexpected exit."""
        return self._restarts

    def command(self) -> list[str]:
        """The argv used to start vLLM."""
        return vllm_command(
            self._model_path,
            self._served_model_name,
            self._host,
            self.port,
            self._max_model_len,
            self._extra_args,
        )

    def environment(self) -> dict[str, str]:
        """The environment used to start vLLM."""
        return vllm_environment(self._kv_cache_gib)

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Spawn vLLM and begin supervising it; returns without waiting for readiness."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("VllmSupervisor already started")
        if not (self._model_path / "config.json").is_file():
            raise FileNotFoundError(f"not a Hugging Face checkpoint directory: {self._model_path}")
        if self._port is None:
            self._port = free_port(self._host)
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{self._port}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._stopping = False
        self._failure = None
        self._ever_ready = False
        proc = await self._spawn(attempt=0)
        self._task = asyncio.create_task(self._supervise(proc), name="vllm-supervisor")

    # The explicit timeout is part of the public API (callers pass their own startup budget).
    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until vLLM serves requests.

        Raises TimeoutError (with the log tail) after ``timeout`` seconds, or RuntimeError
        (with the log tail) if vLLM exited during its first startup or the supervisor gave up.
        Readiness is detected by the supervision task polling ``GET /v1/models``.
        """
        if self._task is None:
            raise RuntimeError("VllmSupervisor.start() was not called")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._ready:
                return
            if self._failure is not None:
                raise RuntimeError(f"{self._failure}\n{self._log_tail_text()}")
            if self._stopping:
                raise RuntimeError("VllmSupervisor was stopped")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"vLLM not ready after {timeout:.0f} s\n{self._log_tail_text()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def stop(self, grace: float = 10.0) -> None:
        """Terminate vLLM (SIGTERM to its process group, SIGKILL after ``grace``). Idempotent."""
        async with self._stop_lock:
            self._stopping = True
            task, self._task = self._task, None
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            proc = self._proc
            if proc is not None:
                await self._terminate(proc, grace)
            self._set_ready(False)
            self._notify()

    # ----------------------------------------------------------------------------- internals

    async def _spawn(self, attempt: int) -> asyncio.subprocess.Process:
        assert self._log_path is not None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} supervisor: starting vLLM (attempt {attempt}) ===\n".encode())
            log.flush()
            argv = self.command()
            logger.info(
                "Starting vLLM on %s (model %s, log %s)",
                self.base_url,
                self._model_path,
                self._log_path,
            )
            spawn = asyncio.ensure_future(self._exec(argv, log))
            try:
                # Shielded: if we are cancelled mid-spawn the fork may already have happened,
                # and we must keep the handle so stop() can kill that process.
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    self._adopt(await spawn)
                raise
        self._adopt(proc)
        return proc

    async def _exec(self, argv: list[str], log: IO[bytes]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *dying_with_parent(argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=self.environment(),
            # Own session => own process group (pgid == pid), so one killpg reaches vLLM's
            # engine-core and other helper processes too.
            start_new_session=True,
        )

    def _adopt(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        if self._finalizer is not None:
            self._finalizer.detach()
        # Safety net if the owner never calls stop() (exception, sys.exit): kill the group when
        # this object is collected or at interpreter exit. It holds only the pid, not self.
        self._finalizer = weakref.finalize(self, kill_group, proc.pid, signal.SIGKILL)

    async def _supervise(self, proc: asyncio.subprocess.Process) -> None:
        failures_in_a_row = 0
        attempt = 0
        while True:
            reached_ready = await self._run_once(proc)
            code = proc.returncode
            # Reap helpers (engine core) that outlived the API server so they do not keep
            # memory or the port.
            kill_group(proc.pid)
            if self._stopping:
                return
            self._set_ready(False)
            if not self._ever_ready:
                self._fail(f"vLLM exited with code {code} before becoming ready")
                return
            failures_in_a_row = 0 if reached_ready else failures_in_a_row + 1
            if failures_in_a_row >= _MAX_RESTARTS_WITHOUT_READY:
                self._fail(
                    f"vLLM exited with code {code}; gave up after "
                    f"{failures_in_a_row} restarts in a row without becoming ready"
                )
                return
            delay = min(_BACKOFF_INITIAL_S * 2**failures_in_a_row, _BACKOFF_MAX_S)
            logger.warning(
                "vLLM exited unexpectedly with code %s; restarting in %.0f s\n%s",
                code,
                delay,
                self._log_tail_text(10),
            )
            await asyncio.sleep(delay)
            attempt += 1
            self._restarts += 1
            proc = await self._spawn(attempt)

    async def _run_once(self, proc: asyncio.subprocess.Process) -> bool:
        """Watch one process until it exits; return whether it became ready."""
        exited = asyncio.ensure_future(proc.wait())
        reached_ready = False
        try:
            async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S, trust_env=False) as client:
                while not exited.done():
                    if await self._probe(client, "/v1/models", expect_model=True):
                        reached_ready = True
                        self._ever_ready = True
                        logger.info("vLLM ready on %s (pid %d)", self.base_url, proc.pid)
                        self._set_ready(True)
                        break
                    await asyncio.wait({exited}, timeout=_READY_POLL_INTERVAL_S)

                failures = 0
                while not exited.done():
                    await asyncio.wait({exited}, timeout=_LIVENESS_INTERVAL_S)
                    if exited.done():
                        break
                    if await self._probe(client, "/health"):
                        failures = 0
                        continue
                    failures += 1
                    logger.warning("vLLM /health check failed (%d in a row)", failures)
                    if failures >= _LIVENESS_FAILURES_BEFORE_KILL:
                        # A hung server never exits by itself; killing it hands it to the
                        # restart path below.
                        logger.error("vLLM unresponsive; killing pid %d", proc.pid)
                        self._set_ready(False)
                        kill_group(proc.pid)
                await exited
        finally:
            if not exited.done():
                exited.cancel()
        return reached_ready

    async def _probe(
        self, client: httpx.AsyncClient, path: str, *, expect_model: bool = False
    ) -> bool:
        return await probe_ok(
            client,
            f"http://{self._host}:{self.port}{path}",
            self._served_model_name if expect_model else None,
        )

    async def _terminate(self, proc: asyncio.subprocess.Process, grace: float) -> None:
        if proc.returncode is None and kill_group(proc.pid, signal.SIGTERM):
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                logger.warning("vLLM did not exit within %.0f s; sending SIGKILL", grace)
        # Always finish with SIGKILL to the group: the API server may exit on SIGTERM while a
        # helper process is still shutting down (or stuck).
        kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        logger.info("vLLM stopped (pid %d, exit code %s)", proc.pid, proc.returncode)

    def _set_ready(self, ready: bool) -> None:
        if ready == self._ready:
            return
        self._ready = ready
        self._notify()
        if self._on_state_change is not None:
            try:
                self._on_state_change(ready)
            except Exception:
                # A faulty observer must not kill the supervision loop.
                logger.exception("on_state_change callback failed")

    def _fail(self, reason: str) -> None:
        logger.error("%s\n%s", reason, self._log_tail_text())
        self._failure = reason
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _log_tail_text(self, lines: int = _LOG_TAIL_LINES) -> str:
        tail = self.log_tail(lines)
        where = f" ({self._log_path})" if self._log_path is not None else ""
        return f"--- last {len(tail)} lines of the vLLM log{where} ---\n" + "\n".join(tail)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> list[str]:
        """The last ``lines`` lines of the vLLM log."""
        return tail_lines(self._log_path, lines) if self._log_path is not None else []
