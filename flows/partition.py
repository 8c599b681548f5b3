"""`partition`: one part of a backfill or update that its parent run cut into partitions (flows/fanout.py), run
by any worker of the pool. Its parameters are those of the flow it is a part of, for its part's symbols and
dates: it plans them again against the ledger and runs them as that flow would, in its own process, so a part
run again (by its parent after a crash, or from the UI) fetches only what its earlier attempt did not commit."""

from __future__ import annotations

from typing import Any, Literal

from prefect.client.schemas.objects import State

from candleflow.errors import BadInputError, IncompleteRunError
from candleflow.report import RunSummary
from flows.backfill import historical_backfill
from flows.fanout import inside_partition
from flows.form import OptionalText
from flows.incremental import incremental_update
from flows.runs import candleflow_flow
from tasks.partitions import report_to_parent

PartOf = Literal["historical_backfill", "incremental_update"]


@candleflow_flow("partition", notify=False)
def partition(
    of: PartOf,
    parameters: dict[str, Any],
    part: int = 1,
    parts: int = 1,
    parent: OptionalText = None,
) -> RunSummary | State[Any]:
    """Run one partition of a fanned-out run.

    Args:
        of: The flow this is a part of: historical_backfill or incremental_update.
        parameters: That flow's parameters for this part (its symbols, timeframe and, for a backfill, dates).
        part: Which part of the parent's run this is (from 1).
        parts: How many parts the parent's run was cut into.
        parent: The id of the parent flow run.
    """
    flows: dict[str, Any] = {"historical_backfill": historical_backfill, "incremental_update": incremental_update}
    if of not in flows:
        raise BadInputError(f"of {of!r} is not a flow a run is cut into partitions of: use one of {', '.join(flows)}")
    if not isinstance(parameters, dict):
        raise BadInputError(f"parameters must be the parameters of {of}, as a JSON object")
    with inside_partition():
        outcome = flows[of].fn(**parameters)
    summary = outcome if isinstance(outcome, RunSummary) else None
    if isinstance(outcome, State):
        error = outcome.result(raise_on_failure=False)
        summary = error.summary if isinstance(error, IncompleteRunError) else None
    if summary is not None:
        report_to_parent(summary)
    result: RunSummary | State[Any] = outcome
    return result
