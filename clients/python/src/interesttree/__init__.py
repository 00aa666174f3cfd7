"""Python client for the interest-tree gRPC API.

`InterestTreeClient` / `AsyncInterestTreeClient` are thin clients with default deadlines,
retries for idempotent calls (made by gRPC, from the service config in `channel_options()`),
pagination helpers and decoded errors. The generated messages and stubs they build on live in
`interesttree.v1`.
"""

from interesttree.client import (
    DEFAULT_DEADLINES_S,
    REQUEST_ID_HEADER,
    AsyncInterestTreeClient,
    InterestTreeClient,
    RetryPolicy,
    channel_options,
    event,
    item_name,
    service_config,
    tree_name,
    user_name,
)
from interesttree.errors import (
    DeadlineExceededError,
    FieldViolation,
    InterestTreeError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    error_from_rpc,
)

__all__ = [
    "DEFAULT_DEADLINES_S",
    "REQUEST_ID_HEADER",
    "AsyncInterestTreeClient",
    "DeadlineExceededError",
    "FieldViolation",
    "InterestTreeClient",
    "InterestTreeError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "UnavailableError",
    "channel_options",
    "error_from_rpc",
    "event",
    "item_name",
    "service_config",
    "tree_name",
    "user_name",
]
