"""candleflow: keep a SQL warehouse of OHLCV bars complete, correct and current.

Layers, one folder each, bottom to top (nothing imports upwards; tests/test_layers.py checks it):

    candleflow/                    the vocabulary: model, timeframes, sessions, planning, inputs, settings, ...
    providers/ warehouse/ expectations/   fetch, load, validate; no Prefect
    ingest/                        the batch engine: fetch, validate, load a batch of chunks; no Prefect
    tasks/                         Prefect tasks: thin wrappers over the layers below
    flows/                         Prefect flows: plan, run chunks in batched tasks, report
    deployments/                   the team's Prefect: server, worker, setup, the Prefect API
    cli/                           the `candleflow` command (top)
"""

__version__ = "0.1.0"
