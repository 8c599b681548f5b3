"""A provider's settings: one pydantic-settings class per provider (as Prefect has one per part).

Each option is given by a run (`--option key=value`, a flow's `provider_options`), else read from the environment
(and `.env`) under the provider's prefix (`CANDLEFLOW_POLYGON_BASE_URL` for polygon's `base_url`), else its
default; a key may also go by the vendor's own variable (`MASSIVE_API_KEY`). This is the only place providers read
the environment: tests/test_settings_only.py checks that no other code does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class KeyBlock:
    """The Prefect Secret block named to hold a provider's key, and the variable that names it."""

    name: str | None
    variable: str


class ProviderSettings(BaseSettings):
    # Unknown options are refused by `from_options`, not here: `extra="forbid"` would also refuse every other
    # variable in a `.env` file.
    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True, env_file=".env", populate_by_name=True)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> Self:
        """The settings with `options` over the environment; an option the provider does not have is refused (a
        pydantic ValidationError naming it, as for a bad value)."""
        given = dict(options or {})
        unknown = [key for key in given if key not in cls.model_fields]
        if unknown:
            errors: list[Any] = [{"type": "extra_forbidden", "loc": (key,), "input": given[key]} for key in unknown]
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return cls(**given)

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable a field is read from: its first alias, else prefix + name."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        if isinstance(alias, str):
            return alias
        return (str(cls.model_config.get("env_prefix", "")) + field).upper()

    def missing_keys(self) -> str | None:
        """None when the provider's keys are at hand (in the options or the environment); else the variables to set.
        Providers that need no key have none missing."""
        return None

    def key_block(self) -> KeyBlock | None:
        """The Secret block that may hold the key, for providers whose key can come from one; else None."""
        return None


class ApiKeySettings(ProviderSettings):
    """Settings of a vendor reached with one API key, from the environment (the field's aliases), the options, or a
    Prefect Secret block named in `api_key_block` (env keys win; the block is read inside the task, tasks/secrets.py).
    Subclasses give `api_key` its aliases: the vendor's own variable names."""

    api_key: SecretStr | None = None
    api_key_block: str | None = None  # the name of a Prefect Secret block holding the key

    @classmethod
    def key_variables(cls) -> str:
        """`MASSIVE_API_KEY (or POLYGON_API_KEY)`: where the key is looked for, as a message names it."""
        alias = cls.model_fields["api_key"].validation_alias
        names = [str(a) for a in alias.choices] if isinstance(alias, AliasChoices) else [cls.variable("api_key")]
        return names[0] + (f" (or {', '.join(names[1:])})" if names[1:] else "")

    def key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    def missing_keys(self) -> str | None:
        return None if self.key() else self.key_variables()

    def key_block(self) -> KeyBlock | None:
        return KeyBlock(self.api_key_block, self.variable("api_key_block"))
