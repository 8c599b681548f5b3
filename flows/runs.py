"""What a flow run looks like from outside: its name in the Prefect UI, and the hooks that tell someone when it
ends Failed or Crashed (see tasks/notify.py for the channels)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.runtime import flow_run as current_run
from prefect.states import Failed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from candleflow.errors import BadInputError, IncompleteRunError, StaleSeriesError
from candleflow.report import RunSummary
from candleflow.settings import notify_settings, run_settings
from tasks.notify import notice_for_state, send_notice, server_will_notify

logger = logging.getLogger("candleflow.notify")
P = ParamSpec("P")
R = TypeVar("R")


def chunk_task_runner() -> TaskRunner[Any]:
    """Where a flow's chunk tasks run (CANDLEFLOW_TASK_RUNNER): `threads` of the flow's process (the default:
    cheap to start, the GIL shared); `processes`, a pool of CANDLEFLOW_TASK_WORKERS processes (validation
    and encoding on every core, at the price of starting them and pickling each batch's results); or `dask`,
    through prefect-dask: the cluster of the scheduler at CANDLEFLOW_DASK_ADDRESS (its workers on any machine),
    else a local cluster of CANDLEFLOW_TASK_WORKERS one-thread processes for the run."""
    settings = run_settings()
    if settings.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=settings.task_workers)
    if settings.task_runner == "dask":
        return dask_task_runner(settings.dask_address, settings.task_workers)
    return ThreadPoolTaskRunner(max_workers=settings.task_workers)


def dask_task_runner(address: str | None, workers: int) -> TaskRunner[Any]:
    """prefect-dask's runner (imported only when chosen: dask.distributed takes a second to import). A local
    cluster has no dashboard (it would take port 8787, which a second run or a real scheduler holds)."""
    from prefect_dask.task_runners import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    kwargs = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return DaskTaskRunner(cluster_kwargs=kwargs)


class TaskRunnerChosenAtStart(TaskRunner[Any]):
    """The flows' `task_runner`: Prefect enters `duplicate()` of it when a run starts, and that is where the
    settings are read, so a run uses CANDLEFLOW_TASK_RUNNER/CANDLEFLOW_TASK_WORKERS as they are when it starts, not
    as they were when the flow's module was imported (a warm process imports it once for many runs)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Prefect's TaskRunner.__init__ is unannotated

    def duplicate(self) -> Any:
        return chunk_task_runner()

    def submit(self, task: Any, parameters: Any, wait_for: Any = None, dependencies: Any = None) -> Any:
        raise RuntimeError("a flow run submits its tasks to duplicate() of this runner, never to it")


def expected_failures_end_quietly(fn: Callable[P, R]) -> Callable[P, R | State[Any]]:
    """Put under `@flow`: a run that fails for an expected reason (bad input, a budget, chunks rejected or failed)
    returns its Failed state with the error as its result instead of raising it, so Prefect logs it in one line
    ("Finished in state Failed(...)") and no traceback: raised, it printed two full tracebacks in the run's logs
    (the flow engine's, then the engine process's) and about 50 lines on the worker's console. The state's
    message is the error's; its result is the error itself, which the command line and the hooks read."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R | State[Any]:
        try:
            return fn(*args, **kwargs)
        except (BadInputError, IncompleteRunError, StaleSeriesError) as error:
            return Failed(message=f"{type(error).__name__}: {error}", data=error)

    return run


class _ExpectedFailureFilter(logging.Filter):
    """Drops the flow-run process's last records, "Engine execution exited with unexpected exception" and a full
    traceback (logged for the run and for the engine), when the run failed for an expected reason: Prefect's
    engine re-raises the returned Failed state's error there, after the run logged it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, BadInputError | IncompleteRunError | StaleSeriesError)


def _quiet_engine_on_expected_failures() -> None:
    for name in ("prefect.engine", "prefect.flow_runs"):
        engine = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedFailureFilter) for f in engine.filters):
            engine.addFilter(_ExpectedFailureFilter())


_quiet_engine_on_expected_failures()


def candleflow_flow(name: str, *, notify: bool = True) -> Callable[[Callable[P, R]], Flow[P, R | State[Any]]]:
    """The decorator of every candleflow flow: its name; each run named from its parameters (`run_name`); the
    task runner chosen when a run starts; parameters checked by flows.inputs, with one-line errors that name the
    input, not by Prefect; expected failures ending in one line (`expected_failures_end_quietly`); the notices
    (not for a partition, `notify=False`: its parent's notice tells its failures)."""

    def decorate(fn: Callable[P, R]) -> Flow[P, R | State[Any]]:
        return flow(
            name=name,
            flow_run_name=run_name,
            task_runner=TaskRunnerChosenAtStart(),
            validate_parameters=False,
            on_failure=[notify_on_failure] if notify else [],
            on_crashed=[notify_on_failure] if notify else [],
            on_completion=[notify_on_completion] if notify else [],
        )(expected_failures_end_quietly(fn))

    return decorate


# What a run's name starts with, so a manual update and a repair over the same series read apart.
_RUN_KIND = {"incremental_update": "update ", "repair_gaps": "repair ", "freshness_check": "freshness "}


def run_name() -> str:
    """`synthetic AAPL,MSFT 1d 2024-01-01..2024-12-31` for a backfill, `update synthetic AAPL 1d,1h to
    2024-05-01` or `repair ...` for the others, `part 3/12: synthetic 40 symbols 1d 2020-01-01..2024-12-31` for
    a partition, from the run's parameters as given (they are not checked yet when Prefect names the run, so
    nothing here may fail)."""
    try:
        return name_of(str(current_run.flow_name), dict(current_run.parameters or {}))
    except Exception:  # a name is not worth failing a run for
        return str(current_run.flow_name or "candleflow run")


def name_of(flow_name: str, p: dict[str, Any]) -> str:
    if flow_name == "refresh_universe":
        return f"refresh universe {p.get('name')} from {p.get('provider', 'polygon')}"
    if flow_name == "partition":
        return f"part {p.get('part')}/{p.get('parts')}: " + name_of(str(p.get("of")), dict(p.get("parameters") or {}))
    symbols = p.get("symbols") or []
    symbols = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    if not symbols and p.get("universe") == "ALL":
        symbols = ["ALL"]
    who = ",".join(map(str, symbols)) if len(symbols) <= 3 else f"{len(symbols)} symbols"
    frames = p.get("timeframes") or [p.get("timeframe", "1d")]
    frames = frames.split(",") if isinstance(frames, str) else list(frames)
    when = f"{p['start']}..{p['end']}" if "start" in p else f"to {p.get('end') or 'today'}"
    if flow_name == "freshness_check":
        when = f"max lag {p.get('max_lag_sessions', 1)}"
    kind = _RUN_KIND.get(flow_name, "")
    return f"{kind}{p.get('provider', 'synthetic')} {who} {','.join(map(str, frames))} {when}"


def notify_on_failure(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """on_failure / on_crashed hook: send the run's notice (the chunks that failed or were rejected and why,
    the counts, the run's page) through the configured channels, unless the server's Automation will send it,
    so a failure is announced once. With no channel configured this does nothing."""
    try:
        if not notify_settings().configured or server_will_notify(state):
            return
        error = state.result(raise_on_failure=False) if state.is_failed() else None
        summary = error.summary if isinstance(error, IncompleteRunError) else None
        send_notice(notice_for_state(flow.name, flow_run, state, summary))
    except Exception:  # a hook must not hide the run's own outcome
        logger.exception("could not send the notice for flow run %s", flow_run.name)


def notify_on_completion(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """on_completion hook: a notice for runs that succeed, only when CANDLEFLOW_NOTIFY_ON_SUCCESS is set."""
    try:
        if not notify_settings().on_success or server_will_notify(state):
            return
        result = state.result(raise_on_failure=False)
        summary = result if isinstance(result, RunSummary) else None
        send_notice(notice_for_state(flow.name, flow_run, state, summary), success=True)
    except Exception:
        logger.exception("could not send the notice for flow run %s", flow_run.name)
