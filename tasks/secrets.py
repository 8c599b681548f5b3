"""Provider keys from Prefect Secret blocks, resolved inside the task so they never become flow parameters,
task inputs, logs or artifacts. Keys in the environment win over blocks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from prefect.blocks.system import Secret

from candleflow.errors import BadInputError
from candleflow.settings import run_settings
from providers.databento import api_key as databento_env_key
from providers.polygon import api_key as polygon_env_key

# provider -> (its env key lookup, the setting naming its Secret block, that setting's env variable)
_KEYED: dict[str, tuple[Callable[[], str | None], str, str]] = {
    "polygon": (polygon_env_key, "polygon_api_key_block", "CANDLEFLOW_POLYGON_API_KEY_BLOCK"),
    "databento": (databento_env_key, "databento_api_key_block", "CANDLEFLOW_DATABENTO_API_KEY_BLOCK"),
}


def with_secrets(provider: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`options` plus the provider's key from its Secret block, when one is named and no env key is set."""
    resolved = dict(options or {})
    if provider not in _KEYED:
        return resolved
    env_key, setting, variable = _KEYED[provider]
    block = getattr(run_settings(), setting)
    if block and "api_key" not in resolved and not env_key():
        try:
            secret = cast(Secret[str], Secret.load(block))  # typed as sync-or-async; sync in a sync task
            resolved["api_key"] = secret.get()
        except ValueError:
            raise BadInputError(f"no Prefect Secret block named {block!r}: create it or fix {variable}") from None
    return resolved
