"""What `ratchet` prints: a quiet terminal while it works, then the round table (columns and formats from the
metrics catalogue) and where to look."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import warnings
from typing import NoReturn

import typer

from components.metrics import BY_KEY, show, show_ci

DELTA = "task/task_completion_delta"  # the one column shown with its CI
# The table's columns: metric -> header.
COLUMNS = {
    "judge/win_rate": "judge win",
    "judge/judge_abstention_rate": "judge abstained",
    "task/challenger_task_completion": "task done",
    DELTA: "delta",
    "refusal/challenger_benign_refusal_rate": "benign refusal",
    "length/length_ratio": "len ratio",
    "train/pairs_trained": "pairs",
    "train/pairs_model_judged": "by AI judge",
}


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: 2 for input refused before any work, 1 for a run that failed."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def stopped(message: str, code: int) -> NoReturn:
    """`fail` for a run stopped by a signal, which has already ended its MLflow runs, its child processes and its
    server: the exit handlers run, then the process ends without Python's teardown of its modules. With torch and
    vLLM loaded that teardown took 3 s of a busy machine's 4.3 s from SIGTERM to exit, and a stop has a deadline
    (systemd's, Kubernetes' grace period)."""
    typer.secho(f"error: {message}", fg="red", err=True)
    atexit._run_exitfuncs()  # Prefect's log and event workers, MLflow's: what the normal exit would run
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# Library progress bars and chatter a user cannot act on; the vLLM worker process inherits these too.
QUIET_ENV = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # "Map", "Filter", "Saving the dataset", TRL's "Tokenizing"
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" follows this one
    "TRANSFORMERS_VERBOSITY": "error",
    "VLLM_LOGGING_LEVEL": "ERROR",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables..."
}
QUIET_LOGGERS = ("bitsandbytes", "vllm", "torch", "alembic")


class ConsoleFilter(logging.Filter):
    """What the quiet terminal keeps: lines a flow marks `extra={"console": True}`, and warnings and errors from
    Ratchet's own code and its Prefect runs, without tracebacks (those stay in the Prefect UI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", False):
            return True
        ours = record.name.startswith(("flows", "components", "prefect.flow_runs", "prefect.task_runs"))
        return ours and record.levelno >= logging.WARNING and record.exc_info is None


def quiet_terminal() -> None:
    """Silence library progress bars, warnings and INFO logs on the terminal, before those libraries are imported.
    What stays: one live bar at a time for the stage at work (on a terminal only, `tqdm(disable=None)`; each
    vanishes when done) and a line per finished stage. Prefect's handler that sends logs to its API is untouched:
    every line still reaches the Prefect UI."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore")  # e.g. TRL on the vLLM version, deprecations inside libraries
    import prefect.main  # noqa: F401  (sets up Prefect's logging: its console handler is on the root logger)

    for handler in logging.getLogger().handlers:
        handler.addFilter(ConsoleFilter())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _cell(metrics: dict, name: str) -> str:
    m = BY_KEY[name]
    value = show(metrics.get(name), m.format)
    if name != DELTA:
        return value
    return "{} ({}, {})".format(value, *show_ci(metrics, name))


def print_rounds(rows: list[dict], ci_level: float) -> None:
    """One line per round (or evaluation): {"k", "metrics", "reason"}."""
    headers = dict(COLUMNS)
    headers[DELTA] = f"delta ({ci_level:.0%} CI)"
    widths = {name: max(len(h), 20 if name == DELTA else 9) for name, h in headers.items()}
    header = f"{'round':>5}  " + "  ".join(f"{h:>{widths[n]}}" for n, h in headers.items()) + "  gate"
    typer.echo("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        cells = "  ".join(f"{_cell(r['metrics'], n):>{widths[n]}}" for n in headers)
        typer.echo(f"{r['k']:>5}  {cells}  {r['reason']}")


def print_report(result, tracking_uri: str, ci_level: float) -> None:
    """The bootstrap's round table, then where its outputs are and how to look at them."""
    from prefect.settings import get_current_settings

    from registry.lineage import tracking_server
    from registry.links import comparison_url

    print_rounds([{"k": r.k, "metrics": r.metrics, "reason": r.decision.reason} for r in result.rounds], ci_level)
    champion = result.champion
    typer.echo(f"\nchampion: {champion.base} + {len(champion.adapters)} adapter(s)")
    typer.echo(f"outputs:  {result.workdir}")
    typer.echo(f"mlflow:   {tracking_uri} (registered model {result.model_name})")
    typer.echo("\nTo look at it:")
    typer.echo(f"  .venv/bin/ratchet compare {result.experiment}")
    typer.echo(f"  .venv/bin/ratchet review {result.experiment}    # the judges' hard cases, for a person to label")
    if not tracking_server():
        typer.echo(f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    typer.echo(f"  open {comparison_url(result.experiment_id)}")
    prefect_api = get_current_settings().api.url
    if prefect_api:
        typer.echo(f"  open {prefect_api.removesuffix('/api')}/runs")
    else:
        typer.echo("  .venv/bin/prefect server start   # then open http://127.0.0.1:4200/runs")


def print_judge_check(label: str, name: str, scores: dict[str, dict[str, float]], rows, shortfalls: list[str]):
    """One judge's calibration table: a line per category and one for all pairs, which part of the judge decided
    how many pairs, then whether it meets the goal."""
    from components.judge_check import decided_by

    typer.echo(f"\n{label}: {name}")
    header = (
        f"{'category':>14}  {'n':>4}  {'accuracy (CI)':>22}  {'decided':>8}  {'orders agree':>12}  {'len slope':>9}"
    )
    typer.echo(header + "\n" + "-" * len(header))
    for category, s in sorted(scores.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        accuracy = (
            f"{show(s['accuracy'], 'pct')} ({show(s['accuracy_ci_low'], 'pct')}, {show(s['accuracy_ci_high'], 'pct')})"
        )
        typer.echo(
            f"{category:>14}  {s['n']:>4.0f}  {accuracy:>22}  {show(s['decided'], 'pct'):>8}"
            f"  {show(s['order_consistency'], 'pct'):>12}  {show(s['length_slope'], 'num'):>9}"
        )
    parts = decided_by(rows)
    typer.echo("decided by: " + (", ".join(f"{part} {n}" for part, n in parts.items()) if parts else "nothing"))
    typer.echo("meets the goal" if not shortfalls else f"short of the goal: {'; '.join(shortfalls)}")


def print_review(bootstrap_id: str, labelled: list, experiment_id: str) -> None:
    """`ratchet review`: how often each judge agreed with the people's labels, and the gold pairs they make."""
    from components.human_review import agreement, gold_pairs
    from registry.links import traces_url

    typer.echo(f"bootstrap {bootstrap_id}: {len(labelled)} pair(s) labelled by a person")
    for judge, (share, n) in sorted(agreement([(human, item.verdicts) for human, item in labelled]).items()):
        typer.echo(f"  {judge:<40} agrees with the person on {share:6.1%} of {n}")
    typer.echo(f"gold pairs for the next round: {len(gold_pairs(labelled))} (people's labels over the judges')")
    typer.echo("  (a round trains only on labels of the pairs its bootstrap queued: judge/ignored_labels)")
    typer.echo(f"label more: open {traces_url(experiment_id)}, a `review ...` trace, and add feedback `better`")
