"""Provider keys from Prefect Secret blocks, resolved inside the task so they never become flow parameters,
task inputs, logs or artifacts. Keys in the environment (or the options) win over blocks. Which block, and the
variable naming it, is the provider's settings' to say (`key_block`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from prefect.blocks.system import Secret

from candleflow.errors import BadInputError
from providers import get_provider


def _block_to_use(provider: str, options: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(block, the variable naming it) when `provider`'s key must come from a Secret block: one is named and
    neither the options nor the environment hold the key."""
    settings = get_provider(provider, options).settings
    block = settings.key_block()
    if block is None or not block.name or settings.missing_keys() is None:
        return None
    return block.name, block.variable


def _load(block: str, variable: str) -> str:
    try:
        secret = cast(Secret[str], Secret.load(block))  # typed as sync-or-async; sync in a sync task
    except ValueError:
        raise BadInputError(f"no Prefect Secret block named {block!r}: create it or fix {variable}") from None
    value = secret.get()
    if not value:
        raise BadInputError(f"the Prefect Secret block {block!r} is empty: save the key in it or fix {variable}")
    return str(value)


def with_secrets(provider: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`options` plus the provider's key from its Secret block, when one is named and no other key is set."""
    resolved = dict(options or {})
    found = _block_to_use(provider, resolved)
    if found is not None:
        resolved["api_key"] = _load(*found)
    return resolved


def check_key_block(provider: str, options: Mapping[str, Any] | None) -> None:
    """A flow's first step: the Secret block its provider's key must come from exists and holds a key, so a run
    without it fails at once, before fetching (the command line checked the environment already)."""
    found = _block_to_use(provider, options)
    if found is not None:
        _load(*found)
