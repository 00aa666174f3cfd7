"""`interest-tree build-trees`: drives BatchBuildInterestTrees and shows a progress bar."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc
from interesttree.v1 import interest_pb2, interest_pb2_grpc
from tqdm import tqdm

BATCH_DEADLINE_S = 3600.0


async def build_trees(
    address: str,
    users: Sequence[str],
    *,
    all_users: bool,
    api_key: str | None = None,
    tls_ca: bytes | None = None,
) -> int:
    """Returns the number of users whose build failed (0 means all succeeded). `api_key` is
    sent as a Bearer key; `tls_ca` (PEM bytes of a CA) makes the channel TLS."""
    request = interest_pb2.BatchBuildInterestTreesRequest(
        users=[u if u.startswith("users/") else f"users/{u}" for u in users],
        all_users=all_users and not users,
    )
    failed = 0
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    channel = (
        grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(tls_ca))
        if tls_ca is not None
        else grpc.aio.insecure_channel(address)
    )
    async with channel:
        stub = interest_pb2_grpc.InterestServiceStub(channel)
        with tqdm(unit="tree", desc="Building trees", file=sys.stderr) as bar:
            async for result in stub.BatchBuildInterestTrees(
                request, timeout=BATCH_DEADLINE_S, metadata=metadata
            ):
                bar.total = result.total_count
                bar.update(1)
                if result.error:
                    failed += 1
                    bar.write(f"{result.user}: {result.error}", file=sys.stderr)
                else:
                    stats = result.tree.build_stats
                    bar.set_postfix(
                        user=result.user.removeprefix("users/"),
                        nodes=len(result.tree.nodes),
                        tokens=stats.prompt_tokens + stats.completion_tokens,
                    )
    return failed
