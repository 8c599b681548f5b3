"""candleflow: keep a SQL warehouse of OHLCV bars complete, correct and current.

Layers (nothing imports upwards):

    candleflow.cli                 command line (top)
    flows/                         Prefect flows: plan, run chunks in batched tasks, report
    tasks/                         Prefect tasks: thin wrappers over the layers below
    providers/ warehouse/ expectations/   fetch, load, validate; no Prefect
    candleflow.{model,timeframes,sessions,planning,inputs,checksum,settings}   pure vocabulary
"""

__version__ = "0.1.0"
