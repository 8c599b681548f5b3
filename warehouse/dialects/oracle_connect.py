"""Connecting to Oracle: wallet and thick-mode settings into engine arguments, a UTC session, and oracledb's
errors turned into one line that names the setting to fix."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from candleflow.settings import oracle_settings

_URL_HINT = "fix --warehouse or CANDLEFLOW_WAREHOUSE_URL"
_WALLET_HINT = "set CANDLEFLOW_ORACLE_WALLET_DIR (and CANDLEFLOW_ORACLE_WALLET_PASSWORD)"
# Oracle error codes (ORA-nnnnn, or the thin driver's DPY-nnnn) and what to fix for each.
_FIXES: dict[str, str] = {
    "ORA-12514": f"the listener does not know that service name: check ?service_name= in the URL ({_URL_HINT})",
    "DPY-6001": f"the listener does not know that service name: check ?service_name= in the URL ({_URL_HINT})",
    "ORA-12505": f"the listener does not know that SID: use ?service_name= in the URL ({_URL_HINT})",
    "ORA-01017": f"user name or password refused: check them in the URL ({_URL_HINT})",
    "ORA-28000": "the account is locked: ask the DBA to unlock it",
    "ORA-12541": f"nothing listens on that host and port: check them in the URL ({_URL_HINT})",
    "DPY-6005": f"cannot connect to that host and port: check them in the URL ({_URL_HINT})",
    "DPY-4011": f"the database closed the connection: check host, port and service in the URL ({_URL_HINT})",
    "DPY-4027": f"no configuration directory for that alias: {_WALLET_HINT}",
    "DPY-4026": f"no tnsnames.ora in the configuration directory: {_WALLET_HINT}",
    "DPY-4000": f"the connect alias is not in tnsnames.ora: check the URL or {_WALLET_HINT}",
    "ORA-28759": f"the wallet file cannot be opened: {_WALLET_HINT}",
    "DPY-6006": f"the wallet cannot be read (missing or wrong password): {_WALLET_HINT}",
    "ORA-01031": "the user may not create the tables: grant CREATE TABLE, or have a DBA create them (see README)",
    "ORA-01950": "the user has no quota on its tablespace: ask the DBA for QUOTA on it",
    "ORA-00942": "a table is missing or not visible to this user: run a backfill to create the tables, or grant access",
}


def engine_arguments() -> dict[str, Any]:
    """create_engine() keyword arguments for Oracle from CANDLEFLOW_ORACLE_* settings."""
    settings = oracle_settings()
    connect: dict[str, Any] = {}
    if settings.wallet_dir:
        connect.update(config_dir=settings.wallet_dir, wallet_location=settings.wallet_dir)
    if settings.wallet_password is not None:
        connect["wallet_password"] = settings.wallet_password.get_secret_value()
    arguments: dict[str, Any] = {"connect_args": connect}
    if settings.thick_mode:
        arguments["thick_mode"] = {"lib_dir": settings.client_lib_dir} if settings.client_lib_dir else {}
    return arguments


def configure(engine: sa.Engine) -> None:
    """Every session works in UTC, so TIMESTAMP columns holding UTC compare rightly with what we bind."""

    @sa.event.listens_for(engine, "connect")
    def _utc_session(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("ALTER SESSION SET TIME_ZONE = '+00:00'")
        cursor.close()


def explain(error: BaseException) -> str | None:
    """What to fix for an oracledb error (or a SQLAlchemy error wrapping one), or None if it is not one we know."""
    original = getattr(error, "orig", None) or error
    details = original.args[0] if getattr(original, "args", None) else None
    code = getattr(details, "full_code", "") or ""
    message = getattr(details, "message", None) or str(original)
    if not code and ":" in message:
        code = message.split(":", 1)[0].strip()
    fix = _FIXES.get(code)
    if fix is None:
        return None
    return f"{code}: {fix}"
