"""Server settings: command-line flags override environment variables (INTEREST_TREE_*)."""

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
    model_config = SettingsConfigDict(env_prefix="INTEREST_TREE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    data_dir: Path = Path("var/data")

    llm_url: str | None = None
    """OpenAI-compatible base URL of a vLLM deployment (…/v1); unset starts the embedded one."""
    llm_model: str | None = None
    llm_api_key: str = "EMPTY"
    llm_timeout_s: float = 60.0
    llm_concurrency: int = Field(default=_ENGINE.llm_concurrency, ge=1, le=256)
    naming_mode: NamingMode = _ENGINE.naming_mode
    naming_budget_s: float | None = Field(default=_ENGINE.naming_budget_s, gt=0)
    """Model time one tree build may spend; nodes not named by then keep their data labels."""
    llm_probe_interval_s: float = Field(default=30.0, gt=0)
    """How often the model is probed once it answered; health service MODEL_SERVICE tells."""
    llm_probe_timeout_s: float = Field(default=30.0, gt=0)

    embedded_llm: bool = True
    """Start a local vLLM server when llm_url is unset; false builds trees from data alone."""
    embedded_llm_port: int = Field(default=0, ge=0, le=65535)
    embedded_llm_ready_timeout_s: float = 600.0
    cache_dir: Path | None = None

    embedding_url: str | None = None
    """OpenAI-compatible /v1 base URL for embeddings; unset uses local sentence-transformers."""
    embedding_model: str | None = None
    embedding_dim: int = 384

    half_life_events: float = Field(default=_ENGINE.half_life_events, gt=0)
    level_weights: tuple[float, ...] = _ENGINE.default_level_weights
    hnsw_ef_search: int = Field(default=_ENGINE.hnsw_ef_search, ge=10)
    index_save_interval_s: float = Field(default=5.0, gt=0)
    model_refresh_interval_s: float = Field(default=600.0, gt=0)
    """How often new events trigger a background retrain of the collaborative vectors."""
    grace_period_s: float = 5.0
    max_receive_message_bytes: int | None = Field(default=None, ge=1024, le=256 * 1024 * 1024)
    """Largest request accepted; unset: the largest batch the caps allow, computed from them
    and the embedding dimension (server.convert.largest_request_bytes, about 19 MiB)."""

    http_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the review page and /metrics (0 picks a free one); unset: no HTTP port."""
    http_host: str | None = None
    """Address of the HTTP port; unset: the gRPC host. The page has no login: keep it private."""
