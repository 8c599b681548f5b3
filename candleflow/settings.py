"""Typed settings from the environment (prefix CANDLEFLOW_). Everything else is a flow parameter."""

from __future__ import annotations

from pydantic import Field, SecretStr
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
    databento_api_key_block: str | None = Field(
        default=None, description="name of a Prefect Secret block holding the Databento key (env keys win)"
    )
    max_retry_after_seconds: float = Field(
        default=120.0, ge=0, description="the longest a vendor's Retry-After may hold a chunk task before its retry"
    )
    task_workers: int = Field(default=4, ge=1, le=64, description="chunk tasks running at once per flow run")


def run_settings() -> RunSettings:
    return RunSettings()


class OracleSettings(BaseSettings):
    """How to reach an Oracle warehouse beyond its URL: a wallet (Autonomous Database) and thick mode."""

    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_ORACLE_", env_file=".env", extra="ignore")

    wallet_dir: str | None = Field(
        default=None, description="folder holding tnsnames.ora and ewallet.pem (config_dir and wallet_location)"
    )
    wallet_password: SecretStr | None = Field(default=None, description="the wallet's password (PEM wallets)")
    thick_mode: bool = Field(default=False, description="use Oracle Client libraries (thick mode) instead of thin")
    client_lib_dir: str | None = Field(default=None, description="where the Oracle Client libraries are (thick)")


def oracle_settings() -> OracleSettings:
    return OracleSettings()
