"""Provider registry: names to classes. Providers know nothing of Prefect or the warehouse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import ValidationError

from candleflow.errors import BadInputError
from providers.base import SOURCE_PATTERN, SOURCE_RULE, FetchRequest, Provider
from providers.csv import CsvOptions, CsvProvider
from providers.databento import DatabentoOptions, DatabentoProvider
from providers.flatfiles import FlatFilesOptions, FlatFilesProvider
from providers.polygon import PolygonOptions, PolygonProvider
from providers.synthetic import SyntheticOptions, SyntheticProvider

PROVIDERS: dict[str, tuple[type[Any], type[Any]]] = {
    SyntheticProvider.name: (SyntheticProvider, SyntheticOptions),
    CsvProvider.name: (CsvProvider, CsvOptions),
    PolygonProvider.name: (PolygonProvider, PolygonOptions),
    FlatFilesProvider.name: (FlatFilesProvider, FlatFilesOptions),
    DatabentoProvider.name: (DatabentoProvider, DatabentoOptions),
}


# The names as a type: the Prefect UI's run form shows a Literal as a dropdown.
ProviderName = Literal["synthetic", "csv", "polygon", "polygon-flatfiles", "databento"]
assert set(get_args(ProviderName)) == set(PROVIDERS), "ProviderName must list every registered provider"


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


def get_provider(name: str, options: Mapping[str, Any] | None = None) -> Provider:
    """Build provider `name` with `options` (its own options model checks them)."""
    cls, options_model = PROVIDERS[check_provider_name(name)]
    try:
        parsed = options_model.model_validate(dict(options or {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadInputError(f"bad option for provider {name!r}: {problems}") from None
    provider: Provider = cls(parsed)
    return provider


__all__ = [
    "PROVIDERS",
    "FetchRequest",
    "Provider",
    "ProviderName",
    "check_provider_name",
    "check_stored_key",
    "get_provider",
    "provider_of",
]
