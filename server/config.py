"""Server settings: command-line flags override environment variables (INTEREST_TREE_*), which
override the TOML config file of `--config` (server/config_file.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from taxonomy.engine import EngineConfig
from taxonomy.trees.naming import NamingMode

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
_ENGINE = EngineConfig()
"""The engine's own defaults: each tunable the engine has is defaulted there, once."""


class Settings(BaseSettings):
    # Attribute docstrings become descriptions: `interest-tree config-template` prints them.
    model_config = SettingsConfigDict(
        env_prefix="INTEREST_TREE_", extra="forbid", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Address of the gRPC port (a non-loopback one needs `require_auth` or `insecure`)."""
    port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (the server prints it)."""
    data_dir: Path = Path("var/data")
    """SQLite store, HNSW index files, learned models and API keys."""
    store_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    """postgresql://… of a PostgreSQL store shared by replicas (README: Scaling out); unset:
    SQLite in data_dir. Indexes and models stay cached in data_dir either way."""
    store_schema: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    """PostgreSQL schema holding the store's tables (default `public`)."""
    replica_poll_interval_s: float = Field(default=1.0, gt=0)
    """With a PostgreSQL store: how often a replica checks for other replicas' writes even
    without a notification (LISTEN/NOTIFY brings them at once)."""

    llm_url: str | None = None
    """OpenAI-compatible base URL of a vLLM deployment (…/v1); unset starts the embedded one."""
    llm_model: str | None = None
    """Model name to request from llm_url; unset: the embedded one, SmolLM2-135M-Instruct."""
    llm_api_key: str = "EMPTY"
    """Bearer key sent to llm_url (vLLM's --api-key); vLLM without one accepts any."""
    llm_timeout_s: float = 60.0
    """Timeout of one model request."""
    llm_concurrency: int = Field(default=_ENGINE.llm_concurrency, ge=1, le=256)
    naming_mode: NamingMode = _ENGINE.naming_mode
    naming_budget_s: float | None = Field(default=_ENGINE.naming_budget_s, gt=0)
    """Model time one tree build may spend; nodes not named by then keep their data labels."""
    llm_probe_interval_s: float = Field(default=30.0, gt=0)
    """How often the model is probed once it answered; health service MODEL_SERVICE tells."""
    llm_probe_timeout_s: float = Field(default=30.0, gt=0)
    """How long one probe of the model may take before it counts as not answering."""

    embedded_llm: bool = True
    """Start a local vLLM server when llm_url is unset; false builds trees from data alone."""
    embedded_llm_port: int = Field(default=0, ge=0, le=65535)
    """Port of the embedded vLLM server; 0 picks a free one."""
    embedded_llm_ready_timeout_s: float = 600.0
    """How long the embedded vLLM may take to start answering."""
    cache_dir: Path | None = None
    """Cache of the embedded model's converted checkpoint; unset: ~/.cache/interest-tree."""

    embedding_url: str | None = None
    """OpenAI-compatible /v1 base URL for embeddings; unset uses local sentence-transformers."""
    embedding_model: str | None = None
    """Model name to request from embedding_url."""
    embedding_dim: int = 384
    """Dimension of the embeddings embedding_url returns (the local model's is 384)."""

    half_life_events: float = Field(default=_ENGINE.half_life_events, gt=0)
    """A tree weighs each event half as much per this many events before the latest."""
    level_weights: tuple[float, ...] = _ENGINE.default_level_weights
    """Default weight of each tree level (coarse to fine) in the fused recommendation vector."""
    hnsw_ef_search: int = Field(default=_ENGINE.hnsw_ef_search, ge=10)
    """HNSW search breadth: higher finds closer neighbours, slower."""
    dislike_weight: float = Field(default=_ENGINE.dislike_weight, ge=0, le=10)
    """How hard a DISLIKE pushes similar items down: λ of the disliked items' mean vector
    subtracted from every interest vector (0: dislikes only stop counting as interest)."""
    index_save_interval_s: float = Field(default=5.0, gt=0)
    """How often changed HNSW indexes are saved to disk."""
    model_refresh_interval_s: float = Field(default=600.0, gt=0)
    """How often new events trigger a background retrain of the collaborative vectors."""
    grace_period_s: float = 5.0
    """On SIGTERM or SIGINT: how long calls in flight may take to finish before cancellation."""
    max_receive_message_bytes: int | None = Field(default=None, ge=1024, le=256 * 1024 * 1024)
    """Largest request accepted; unset: the largest batch the caps allow, computed from them
    and the embedding dimension (server.convert.largest_request_bytes, about 19 MiB)."""

    http_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the review page and /metrics (0 picks a free one); unset: no HTTP port."""
    http_host: str | None = None
    """Address of the HTTP port; unset: the gRPC host. With `require_auth` the page and its API
    need a key (reader), /metrics an admin key of the default tenant."""

    # Security (README: Security) ---------------------------------------------------------
    tls_cert: Path | None = None
    """PEM certificate chain of the server: TLS on the gRPC port and the HTTP port."""
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    require_auth: bool = False
    """Every interesttree.v1 call (and the HTTP port) needs an API key (`interest-tree keys`)."""
    insecure: bool = False
    """Allow a non-loopback address without `require_auth` (refused at start-up otherwise)."""
    close_reflection: bool = False
    """Server reflection needs a key too (health stays open for probes)."""
    rate_limit_per_s: float | None = Field(default=None, gt=0)
    """Requests per second per tenant; unset: no limit."""
    rate_burst: int | None = Field(default=None, ge=1)
    """Token-bucket size of the rate limit; unset: one second's worth."""
    max_items: int | None = Field(default=None, ge=0)
    """Items one tenant may hold; unset: no cap (the same for events and users)."""
    max_events: int | None = Field(default=None, ge=0)
    """Events one tenant may hold; unset: no cap."""
    max_users: int | None = Field(default=None, ge=0)
    oidc_issuer: str | None = None
    """Accept OIDC access tokens (JWTs) of this issuer too; needs the audience and JWKS file."""
    oidc_audience: str | None = None
    oidc_jwks_file: Path | None = None
    """The issuer's signing keys (its JWKS document), kept current by the operator."""
    oidc_tenant_claim: str = "tenant"
    oidc_role_claim: str = "role"
    """Users one tenant may hold; unset: no cap."""


def engine_config(settings: Settings, *, naming: bool) -> EngineConfig:
    """The engine's configuration from the service settings; `naming` is False when no chat
    model is reachable, so trees are named from the data alone."""
    return EngineConfig(
        half_life_events=settings.half_life_events,
        default_level_weights=settings.level_weights,
        naming_mode=settings.naming_mode if naming else NamingMode.OFF,
        llm_concurrency=settings.llm_concurrency,
        naming_budget_s=settings.naming_budget_s,
        hnsw_ef_search=settings.hnsw_ef_search,
        dislike_weight=settings.dislike_weight,
    )
