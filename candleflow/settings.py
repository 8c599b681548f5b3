"""Typed settings from the environment (prefix CANDLEFLOW_). Everything else is a flow parameter."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RunSettings(BaseSettings):
    """How chunk tasks run: retries (transient provider errors only), backoff and parallelism."""

    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_", env_file=".env", extra="ignore")

    retries: int = Field(default=4, ge=0, le=20)
    retry_backoff_seconds: float = Field(default=2.0, ge=0, description="first retry delay; doubles each retry")
    retry_jitter_factor: float = Field(default=0.5, ge=0)
    polygon_api_key_block: str | None = Field(
        default=None, description="name of a Prefect Secret block holding the Polygon/Massive key (env keys win)"
    )
    task_workers: int = Field(default=4, ge=1, le=64, description="chunk tasks running at once per flow run")


def run_settings() -> RunSettings:
    return RunSettings()
