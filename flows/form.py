"""Optional parameters as the Prefect UI's run form should show them: one plain input, left empty for none.

Declared as `float | None`, a parameter's JSON schema is `anyOf: [number, null]`, which the form draws as a
`float | None` switch with "Property is type None" under it. These types keep `None` as the Python default and
give the form only the value's own type; the flows check every value themselves (flows/inputs.py), and the
deployments do not enforce the schema, so an API caller may still send null.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field, WithJsonSchema

OptionalAmount = Annotated[float | None, Field(ge=0), WithJsonSchema({"type": "number", "minimum": 0})]
OptionalCount = Annotated[int | None, Field(ge=0), WithJsonSchema({"type": "integer", "minimum": 0})]
OptionalText = Annotated[str | None, WithJsonSchema({"type": "string"})]
OptionalDate = Annotated[dt.date | None, WithJsonSchema({"type": "string", "format": "date"})]
