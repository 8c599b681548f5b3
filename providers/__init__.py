"""Provider registry: names to classes. Providers know nothing of Prefect or the warehouse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from candleflow.errors import BadInputError
from providers.base import SOURCE_PATTERN, SOURCE_RULE, Capabilities, FetchRequest, FetchResult, Provider
from providers.csv import CsvProvider
from providers.databento import DatabentoProvider
from providers.flatfiles import FlatFilesProvider
from providers.polygon import PolygonProvider
from providers.synthetic import SyntheticProvider

PROVIDERS: dict[str, type[Provider[Any]]] = {
    cls.name: cls for cls in (SyntheticProvider, CsvProvider, PolygonProvider, FlatFilesProvider, DatabentoProvider)
}

# The names as a type, derived from the registry: the Prefect UI's run form shows a Literal as a dropdown. Type
# checkers see a plain str (a Literal built at run time is not one they can read).
if TYPE_CHECKING:
    ProviderName = str
else:
    ProviderName = Literal[tuple(PROVIDERS)]


def check_stored_key(key: str) -> tuple[str, str | None]:
    """`csv:quandl` -> ("csv", "quandl"); a bad name or source is bad input."""
    name, _, source = str(key).partition(":")
    check_provider_name(name)
    if source and not SOURCE_PATTERN.fullmatch(source):
        raise BadInputError(f"source {source!r} of {key!r}: {SOURCE_RULE}")
    return name, source or None


def provider_of(key: str) -> str:
    """The provider's name in a stored key: `csv:quandl` -> `csv`."""
    return key.partition(":")[0]


def check_provider_name(name: str) -> str:
    if not isinstance(name, str) or name not in PROVIDERS:
        valid = ", ".join(sorted(PROVIDERS))
        raise BadInputError(f"unknown provider {name!r}: use one of {valid}")
    return name


def get_provider(name: str, options: Mapping[str, Any] | None = None) -> Provider[Any]:
    """Build provider `name` with `options` over its settings from the environment (its settings class checks
    them)."""
    cls = PROVIDERS[check_provider_name(name)]
    try:
        settings = cls.settings_class.from_options(options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadInputError(f"bad option for provider {name!r}: {problems}") from None
    return cls(settings)


__all__ = [
    "PROVIDERS",
    "Capabilities",
    "FetchRequest",
    "FetchResult",
    "Provider",
    "ProviderName",
    "check_provider_name",
    "check_stored_key",
    "get_provider",
    "provider_of",
]
