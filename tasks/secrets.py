"""Provider keys from Prefect Secret blocks, resolved inside the task so they never become flow parameters,
task inputs, logs or artifacts. Keys in the environment win over blocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from prefect.blocks.system import Secret

from candleflow.errors import BadInputError
from candleflow.settings import run_settings
from providers.polygon import api_key as polygon_env_key


def with_secrets(provider: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`options` plus the provider's key from its Secret block, when one is named and no env key is set."""
    resolved = dict(options or {})
    block = run_settings().polygon_api_key_block
    if provider == "polygon" and block and "api_key" not in resolved and not polygon_env_key():
        try:
            secret = cast(Secret[str], Secret.load(block))  # typed as sync-or-async; sync in a sync task
            resolved["api_key"] = secret.get()
        except ValueError:
            raise BadInputError(
                f"no Prefect Secret block named {block!r}: create it or fix CANDLEFLOW_POLYGON_API_KEY_BLOCK"
            ) from None
    return resolved
