"""A SIGKILL never loses an acknowledged write.

Several writers send UpsertItems and RecordEvents (with request_id idempotency keys) to a real
server process, recording every write the server acknowledged. The server is SIGKILLed at a
seeded random moment and restarted on the same data directory, then:
- every acknowledged item is found by GetItem and ListItems, at its acknowledged version or a
  later one that was in flight;
- a write in flight at the kill is replayed with its request_id: it records all its events
  or none, and replaying an acknowledged batch records nothing;
- RefreshModels counts exactly the recorded events, and each user's tree as many as its own;
- the service recommends for an existing user.

INTEREST_TREE_KILL_CYCLES (default 8) and INTEREST_TREE_KILL_SEED bound and pick the run.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from interesttree.v1 import admin_pb2, catalog_pb2, interest_pb2, recommendation_pb2

from .embeddings import HashEmbeddings
from .processes import ServerProcess, start_server
from .support import SUMMARY, Code

CYCLES = int(os.environ.get("INTEREST_TREE_KILL_CYCLES", "8"))
SEED = int(os.environ.get("INTEREST_TREE_KILL_SEED", "20261201"))
WRITERS = 4
ITEMS_PER_WRITER = 25
GONE = {Code.UNAVAILABLE, Code.CANCELLED, Code.DEADLINE_EXCEEDED}
# Saves and background retraining every second, so kills also land in the middle of them.
SERVER_ENV = {
    "INTEREST_TREE_INDEX_SAVE_INTERVAL_S": "0.2",
    "INTEREST_TREE_MODEL_REFRESH_INTERVAL_S": "1",
}
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@dataclass
class Ledger:
    """Every write sent, and which of them the server acknowledged."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked_version: dict[str, int] = field(default_factory=dict)
    sent_version: dict[str, int] = field(default_factory=dict)
    batches: dict[str, interest_pb2.RecordEventsRequest] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)
    acked_writes: int = 0
    replays: int = 0
    problems: list[str] = field(default_factory=list)

    def events_of(self, user: str | None = None) -> int:
        return sum(
            sum(1 for event in self.batches[key].events if user in (None, event.user))
            for key in self.acked
        )


def write_once(server: ServerProcess, ledger: Ledger, writer: int, rng: random.Random) -> bool:
    """One write; False once the server is gone."""
    owned = [f"items/w{writer}-{k}" for k in range(ITEMS_PER_WRITER)]
    with ledger.lock:
        existing = [name for name in owned if name in ledger.acked_version]
        replay = rng.choice(sorted(ledger.acked)) if ledger.acked and rng.random() < 0.1 else ""
    try:
        if replay:
            again = server.interests.RecordEvents(ledger.batches[replay], timeout=30)
            with ledger.lock:
                ledger.replays += 1
                if again.recorded_count != 0:
                    ledger.problems.append(f"replayed {replay} recorded {again.recorded_count}")
        elif not existing or rng.random() < 0.4:
            chosen = rng.sample(owned, rng.randint(1, 8))
            with ledger.lock:
                versions = {name: ledger.sent_version.get(name, 0) + 1 for name in chosen}
                ledger.sent_version.update(versions)
            items = [
                catalog_pb2.Item(name=name, title=f"{name} v{version}", categories=["Books"])
                for name, version in versions.items()
            ]
            server.catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), timeout=30)
            with ledger.lock:
                ledger.acked_writes += 1
                for name, version in versions.items():
                    ledger.acked_version[name] = max(version, ledger.acked_version.get(name, 0))
        else:
            with ledger.lock:
                key = f"w{writer}-{len(ledger.batches)}"
                batch = interest_pb2.RecordEventsRequest(request_id=key)
                for n in range(rng.randint(1, 20)):
                    event = batch.events.add(user=f"users/w{writer}", item=rng.choice(existing))
                    event.event_time.FromSeconds(1_700_000_000 + len(ledger.batches) * 60 + n)
                ledger.batches[key] = batch
                ledger.in_flight.add(key)
            server.interests.RecordEvents(batch, timeout=30)
            with ledger.lock:
                ledger.acked_writes += 1
                ledger.in_flight.discard(key)
                ledger.acked.add(key)
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else Code.UNKNOWN
        if code not in GONE:
            with ledger.lock:
                ledger.problems.append(f"write failed: {code.name} {error}")
        return False
    return True


def list_titles(server: ServerProcess) -> dict[str, str]:
    titles: dict[str, str] = {}
    token = ""
    while True:
        page = server.catalog.ListItems(
            catalog_pb2.ListItemsRequest(page_size=37, page_token=token), timeout=30
        )
        titles.update({item.name: item.title for item in page.items})
        token = page.next_page_token
        if not token:
            return titles


def verify(server: ServerProcess, ledger: Ledger) -> int:
    """Checks everything acknowledged survived; returns how many writes were lost."""
    lost = 0
    titles = list_titles(server)
    for name, sent in ledger.sent_version.items():
        acked = ledger.acked_version.get(name, 0)
        versions = {f"{name} v{v}" for v in range(max(acked, 1), sent + 1)}
        if acked and titles.get(name) not in versions:
            lost += 1
            ledger.problems.append(f"{name}: acknowledged v{acked}, listed {titles.get(name)}")
        elif not acked and name in titles and titles[name] not in versions:
            ledger.problems.append(f"{name}: never written as {titles[name]!r}")
    for name in ledger.acked_version:
        got = server.catalog.GetItem(catalog_pb2.GetItemRequest(name=name), timeout=30)
        if got.item.title != titles.get(name):
            ledger.problems.append(f"GetItem({name}) {got.item.title!r} != ListItems")
    before = server.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=300)
    lost += max(0, ledger.events_of() - before.event_count)
    for key in sorted(ledger.in_flight):  # in flight at the kill: all or nothing
        batch = ledger.batches[key]
        recorded = server.interests.RecordEvents(batch, timeout=30).recorded_count
        if recorded not in (0, len(batch.events)):
            ledger.problems.append(f"{key}: {recorded} of {len(batch.events)} events recorded")
        ledger.acked.add(key)
    ledger.in_flight.clear()
    for key in sorted(ledger.acked)[-20:]:
        if server.interests.RecordEvents(ledger.batches[key], timeout=30).recorded_count:
            ledger.problems.append(f"replaying {key} recorded its events twice")
    after = server.admin.RefreshModels(admin_pb2.RefreshModelsRequest(), timeout=300)
    if after.event_count != ledger.events_of():
        ledger.problems.append(f"{after.event_count} events stored, {ledger.events_of()} sent")
    for writer in range(WRITERS):
        user = f"users/w{writer}"
        if expected := ledger.events_of(user):
            request = interest_pb2.BuildInterestTreeRequest(user=user)
            tree = server.interests.BuildInterestTree(request, timeout=120).tree
            if tree.event_count != expected:
                ledger.problems.append(f"{user}: tree of {tree.event_count} events, {expected}")
    users = sorted({e.user for key in ledger.acked for e in ledger.batches[key].events})
    if users:
        recommend = recommendation_pb2.RecommendRequest(user=users[0], page_size=5)
        assert server.recommender.Recommend(recommend, timeout=30).recommendations
    return lost


def load_and_kill(server: ServerProcess, ledger: Ledger, cycle: int, delay: float) -> None:
    """Writers write until the server is SIGKILLed `delay` seconds in."""
    stop = threading.Event()

    def writer(index: int) -> None:
        own = random.Random(f"{SEED}-{cycle}-{index}")
        while not stop.is_set() and write_once(server, ledger, index, own):
            pass

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    stop.wait(delay)
    server.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)


def test_sigkill_under_write_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    embeddings = HashEmbeddings()
    rng = random.Random(SEED)
    ledger = Ledger()
    data_dir = tmp_path / "data"
    lost = 0
    try:
        for cycle in range(CYCLES + 1):
            server = start_server(data_dir, env={**embeddings.env(), **SERVER_ENV})
            lost += verify(server, ledger)
            assert not ledger.problems, "\n".join(ledger.problems[:20])
            if cycle == CYCLES:
                assert server.stop() == 0, server.log_tail()
                break
            load_and_kill(server, ledger, cycle, rng.uniform(0.3, 3.0))
            assert not ledger.problems, "\n".join(ledger.problems[:20])
    finally:
        embeddings.close()
    acked = Counter({"items": len(ledger.acked_version), "batches": len(ledger.acked)})
    SUMMARY.append(
        f"kill loop: {CYCLES} SIGKILL cycles (seed {SEED}), {ledger.acked_writes} acknowledged "
        f"writes ({acked['items']} items, {acked['batches']} event batches, "
        f"{ledger.events_of()} events), {ledger.replays} request_id replays, {lost} writes lost"
    )
    assert lost == 0
