"""Typed settings from the environment (prefix CANDLEFLOW_). Everything else is a flow parameter. Each provider's
settings (its options, keys and Secret block) are its own: providers/settings.py."""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from candleflow.errors import BadInputError

S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    """Read `cls` from the environment (and .env); a bad value is one line naming its variable, never a
    traceback, and never echoes a secret."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        first = exc.errors()[0]
        name = (prefix + ".".join(map(str, first["loc"]))).upper()
        raise BadInputError(f"setting {name}: {first['msg']}; fix or unset {name}") from None


class RunSettings(BaseSettings):
    """How chunk tasks run: retries (transient provider errors only), backoff and parallelism."""

    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_", env_file=".env", extra="ignore")

    retries: int = Field(default=4, ge=0, le=20)
    retry_backoff_seconds: float = Field(default=2.0, ge=0, description="first retry delay; doubles each retry")
    retry_jitter_factor: float = Field(default=0.5, ge=0)
    max_retry_after_seconds: float = Field(
        default=120.0, ge=0, description="the longest a vendor's Retry-After may hold a chunk task before its retry"
    )
    task_workers: int = Field(default=4, ge=1, le=64, description="chunk tasks running at once per flow run")
    batch_rows: int = Field(
        default=120_000,
        ge=1,
        description="bars one task fetches, validates (in one suite call) and loads: small chunks share a task",
    )
    batch_chunks: int = Field(default=100, ge=1, le=10_000, description="at most this many chunks in one task")
    task_runner: Literal["threads", "processes", "dask"] = Field(
        default="threads",
        description="run chunk tasks in threads of the flow's process, in a pool of processes (Prefect's), or on a "
        "Dask cluster (prefect-dask): CANDLEFLOW_DASK_ADDRESS's scheduler, else a local cluster of this machine",
    )
    dask_address: str | None = Field(
        default=None,
        description="a running `dask scheduler` (tcp://HOST:8786) for CANDLEFLOW_TASK_RUNNER=dask; its workers "
        "need PREFECT_API_URL, the warehouse URL and the keys in their environment. Empty: a local cluster of "
        "CANDLEFLOW_TASK_WORKERS processes, started and stopped with the run",
    )
    partition_bars: int = Field(
        default=2_000_000,
        ge=1,
        description="a deployed backfill or update planning more bars than this is cut into partitions of about "
        "this many bars, each a child flow run of the partition deployment on the work pool",
    )
    partitions_at_once: int = Field(
        default=8, ge=1, le=1000, description="child flow runs of one fanned-out run running at once, at most"
    )
    partition_reruns: int = Field(
        default=2, ge=0, le=10, description="how often a crashed child flow run (its worker died) is run again"
    )
    calendars: dict[str, str] = Field(
        default_factory=dict,
        description='exchange calendar per symbol, JSON, e.g. {"^FTSE": "XLON", "ES": "CME_Equity"} (default XNYS)',
    )


def run_settings() -> RunSettings:
    return load_settings(RunSettings)


class WarehouseSettings(BaseSettings):
    """Which warehouse (when --warehouse or a run's warehouse_url does not say), its password (never a parameter),
    and how long to wait for it before saying why it cannot be used."""

    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_WAREHOUSE_", env_file=".env", extra="ignore")

    url: str | None = Field(
        default=None, description="SQLAlchemy URL of the warehouse; default sqlite:///candleflow.db"
    )
    password: SecretStr | None = Field(
        default=None, description="the password of the warehouse URL's user, kept out of the runs' parameters"
    )

    connect_timeout_seconds: int = Field(
        default=10, ge=2, le=600, description="a server that does not answer a new connection within this is reported"
    )
    busy_timeout_seconds: float = Field(
        default=15.0,
        ge=0,
        le=3600,
        description="SQLite: how long a write waits for another process's write lock before the run stops",
    )


def warehouse_settings() -> WarehouseSettings:
    return load_settings(WarehouseSettings)


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
    return load_settings(OracleSettings)


class NotifySettings(BaseSettings):
    """Where candleflow tells someone that a run failed or crashed. Any of the three; all that are set are used.
    URLs are secrets: they are stored in Prefect blocks and never printed."""

    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_NOTIFY_", env_file=".env", extra="ignore")

    slack_webhook_url: SecretStr | None = Field(default=None, description="a Slack incoming-webhook URL")
    webhook_url: SecretStr | None = Field(
        default=None, description="any URL that takes a JSON POST of {source, subject, body}"
    )
    block: str | None = Field(
        default=None, description="the name of an existing Prefect notification block (Teams, email, ...)"
    )
    on_success: bool = Field(default=False, description="also send a notice when a run completes")

    @property
    def configured(self) -> bool:
        return bool(self.slack_webhook_url or self.webhook_url or self.block)


def notify_settings() -> NotifySettings:
    return load_settings(NotifySettings)


class TeamServerSettings(BaseSettings):
    """The team's lasting Prefect server (`candleflow server`) and its worker (`candleflow worker`)."""

    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_PREFECT_", env_file=".env", extra="ignore")

    database_url: SecretStr = Field(
        default=SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/prefect"),
        description="the Prefect server's own database (created if missing); a secret: it may hold a password",
    )
    host: str = Field(default="127.0.0.1", description="where the server listens")
    port: int = Field(default=4200, ge=1, le=65535)
    pool: str = Field(default="candleflow", description="the work pool of prefect.yaml")
    heartbeat_seconds: int = Field(default=30, ge=30, description="how often runs tell the server they are alive")
    crash_after_seconds: int = Field(
        default=90, ge=35, description="a run silent this long (no heartbeat, no end) is marked Crashed"
    )


def team_server_settings() -> TeamServerSettings:
    return load_settings(TeamServerSettings)


class MetricsSettings(BaseSettings):
    """Where a run pushes its own figures when it ends (optional): a Prometheus Pushgateway."""

    model_config = SettingsConfigDict(env_prefix="CANDLEFLOW_", env_file=".env", extra="ignore")

    pushgateway_url: str | None = Field(
        default=None, description="a Pushgateway (http://HOST:9091): each run pushes its figures there when it ends"
    )
    pushgateway_job: str = Field(default="candleflow", min_length=1, description="the job the figures are pushed as")
    pushgateway_timeout_seconds: float = Field(default=5.0, gt=0, le=120)


def metrics_settings() -> MetricsSettings:
    return load_settings(MetricsSettings)
