"""Python client for the interest-tree gRPC API.

`InterestTreeClient` / `AsyncInterestTreeClient` are thin clients with default deadlines,
retries for idempotent calls, pagination helpers and decoded errors. The generated messages
and stubs they build on live in `interesttree.v1`.
"""

from interesttree.client import (
    DEFAULT_DEADLINES_S,
    REQUEST_ID_HEADER,
    AsyncInterestTreeClient,
    InterestTreeClient,
    RetryPolicy,
    item_name,
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
    "error_from_rpc",
    "item_name",
    "tree_name",
    "user_name",
]
