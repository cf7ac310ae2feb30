"""The `ratchet` command.

ratchet run configs/smoke.yaml [--rounds 3]      a bootstrap, then where to look
ratchet compare smoke                            the round-over-round table, from MLflow
ratchet promote smoke 3 / ratchet rollback smoke move the champion alias by hand (recorded in MLflow)
ratchet evaluate configs/smoke.yaml --challenger 3 --champion base
ratchet review smoke                             people's labels on the review queue, human-judge agreement
ratchet judge-check configs/efficacy.yaml        every judge of a config on the calibration set (or --pairs FILE)
ratchet serve                                    serve prefect.yaml's deployments from this process
ratchet stack up|down|status|migrate             a team's PostgreSQL-backed Prefect and MLflow servers, and a worker
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated

import typer

from flows.arguments import (
    SetOption,
    StoreOption,
    VerboseOption,
    checked_config,
    checked_inputs,
    checked_schema,
    parse_sets,
    store_client,
)
from flows.checkpoint_cli import evaluate_command, export_command
from flows.console import fail, print_report, print_rounds, stopped
from flows.stack_cli import app as stack_app

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network on these machines
os.environ.setdefault("DO_NOT_TRACK", "1")  # nor client telemetry (and no notice about it)
# MLflow reads DO_NOT_TRACK only as "true"; its telemetry thread also sets a variable in os.environ while other
# threads read it, which once failed an upload with KeyError('_MLFLOW_TELEMETRY_SESSION_ID').
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "1")  # "View run ... at" on a server; we print links
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file it reads back (adapters)
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "components")  # their log lines reach the Prefect UI
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # e.g. judge-check, outside a flow

TRACE = " (the traceback: the flow run in the Prefect UI, or --verbose)"

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Iterative self-improvement by AI feedback.")
app.add_typer(stack_app, name="stack")
app.command("evaluate")(evaluate_command)
app.command("export")(export_command)


@app.callback()
def main() -> None:
    """Ratchet: iterative self-improvement by AI feedback, on Prefect and MLflow."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/smoke.yaml.")],
    rounds: Annotated[int | None, typer.Option(min=1, help="Override the config's number of rounds.")] = None,
    store: StoreOption = Path("."),
    set_: SetOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Run a bootstrap: N rounds of generate, judge, train, evaluate and gate."""
    from components.config.loading import run_overrides

    overrides = parse_sets(set_ or [])
    cfg = checked_schema(config, run_overrides(rounds, overrides), verbose)
    from prefect.settings import get_current_settings

    if cfg.gate.require_approval and not get_current_settings().api.url:
        fail(
            f"{config}: gate.require_approval pauses rounds for a reviewer, who needs a Prefect server: "
            "start `prefect server start`, set PREFECT_API_URL, or run it as a deployment"
        )
    from flows.runtime import Stopped, prefect_api, stop_on_signals

    def meanwhile() -> None:  # while the temporary server starts: the input checks and the run's imports
        checked_inputs(cfg, store)
        importlib.import_module("flows.bootstrap")

    try:
        with stop_on_signals(), prefect_api(meanwhile=meanwhile):
            from flows.bootstrap import bootstrap

            result = bootstrap(str(config), rounds=rounds, store=str(store), overrides=overrides or None)
    except typer.Exit:  # refused by the input checks: their one line is out
        raise
    except Stopped as stop:
        stopped(f"stopped by {stop}; re-run the same command to resume", 128 + stop.signum)
    except Exception as err:  # the traceback is in the log above; the last line says what failed
        fail(
            f"the bootstrap failed: {type(err).__name__}: {one_line(err)}; re-run the same command to resume{TRACE}", 1
        )
    from registry.lineage import tracking_uri_for

    print_report(result, tracking_uri_for(store), cfg.evaluation.ci_level)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


@app.command()
def compare(
    experiment: Annotated[str, typer.Argument(help="Experiment (config) name, e.g. smoke.")],
    bootstrap_id: Annotated[str | None, typer.Option("--bootstrap", help="A bootstrap id; default the newest.")] = None,
    store: StoreOption = Path("."),
) -> None:
    """Print the round-over-round table of a bootstrap from MLflow (the numbers the MLflow compare view shows)."""
    from registry import compare

    try:
        found, rows, ci_level = compare.round_table(store_client(store), experiment, bootstrap_id)
    except ValueError as err:
        fail(str(err))
    typer.echo(f"bootstrap {found}")
    print_rounds([{"k": r["round"], "metrics": r, "reason": r["decision"]} for r in rows], ci_level)


@app.command()
def promote(
    experiment: Annotated[str, typer.Argument(help="Experiment (config) name.")],
    version: Annotated[str, typer.Argument(help="Registered model version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why; recorded with the move.")] = "",
    store: StoreOption = Path("."),
) -> None:
    """Make a registered version the champion by hand, overriding the gate; the move is recorded in MLflow."""
    _move(experiment, version, "promote", reason, store)


@app.command()
def rollback(
    experiment: Annotated[str, typer.Argument(help="Experiment (config) name.")],
    to: Annotated[str | None, typer.Option(help="Version to go back to; default the previous champion.")] = None,
    reason: Annotated[str, typer.Option(help="Why; recorded with the move.")] = "",
    store: StoreOption = Path("."),
) -> None:
    """Move the champion back to the previous champion (or the base model if there was none)."""
    from registry import versions

    if to is None:
        try:
            to = versions.previous_champion(store_client(store), versions.model_name_for(experiment))
        except (ValueError, versions.MlflowException) as err:
            fail(str(err))
    _move(experiment, to, "rollback", reason, store)


def _move(experiment: str, version: str | None, action: str, reason: str, store: Path) -> None:
    from registry import versions

    client = store_client(store)
    try:
        if version is not None:
            version = versions.resolve_version(client, versions.model_name_for(experiment), version)
        run_id = versions.move_champion(client, experiment, version, action, reason)
    except versions.MlflowException as err:
        fail(f"{experiment}: {err.message}")
    now = f"version {version}" if version else "the base model"
    typer.echo(f"champion of {versions.model_name_for(experiment)} is now {now}")
    typer.echo(f"recorded as MLflow run {run_id}")


@app.command("judge-check")
def judge_check(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose judges to measure.")],
    only: Annotated[
        list[str] | None, typer.Option("--judge", help="Only this judge: training, evaluation, training.default...")
    ] = None,
    set_: SetOption = None,
    route: Annotated[
        list[str] | None,
        typer.Option(
            help="Hand a cohort's pairs to the verifier or the refusal classifier, e.g. should_refuse=refusal."
        ),
    ] = None,
    cohort: Annotated[
        list[str] | None, typer.Option(help="Only this cohort's pairs, e.g. ifeval (default: all).")
    ] = None,
    pairs_file: Annotated[
        Path | None,
        typer.Option(
            "--pairs",
            help="Your own gold pairs instead of the calibration set: JSON lines with prompt, better, worse, "
            "category (and optionally id, cohort, context, check).",
        ),
    ] = None,
    from_review: Annotated[
        str | None,
        typer.Option(
            "--from-review",
            help="The pairs people labelled in this experiment's review queue (every bootstrap), instead of the "
            "calibration set.",
        ),
    ] = None,
    store: StoreOption = Path("."),
    verbose: VerboseOption = False,
) -> None:
    """Measure every judge in CONFIG on the calibration set (data/judge_calibration.jsonl: 160 pairs whose better
    answer is known), on your own gold pairs (--pairs), or on the review queue's human labels (--from-review):
    accuracy on the pairs it decided, decided share, order consistency and length slope, per category, with CIs.
    Logged to MLflow as a `judge-check` run of the experiment."""
    cfg = checked_config(config, parse_sets(set_ or []), store, verbose)
    from components import judge_check as jc
    from flows.console import print_judge_check
    from flows.gold_pairs import gold_pairs
    from registry import judge_checks, lineage

    judges = jc.judges_in(cfg)
    unknown = sorted(set(only or []) - set(judges))
    if unknown:
        fail(f"--judge {', '.join(unknown)}: not a judge of {config} (its judges: {', '.join(judges)})")
    pairs, source, source_file = gold_pairs(pairs_file, from_review, store)
    try:
        routes = jc.parse_routes(route or [], pairs)
    except ValueError as err:
        fail(f"--route {err}")
    try:
        cohorts = jc.parse_cohorts(cohort or [], pairs)
    except ValueError as err:
        fail(f"--cohort {err}")
    printed = lambda label, result: print_judge_check(label, *result, jc.meets_goal(result[1]))  # noqa: E731
    results = jc.check_judges(cfg, only or list(judges), printed, routes, cohorts, pairs)
    uri = lineage.tracking_uri_for(store)
    run_id = judge_checks.log_judge_check(uri, lineage.artifact_root_for(store), cfg.name, results, source, source_file)
    typer.echo(f"\nlogged to MLflow: run {run_id} of experiment {cfg.name} ({uri})")


@app.command("review")
def review_command(
    experiment: Annotated[str, typer.Argument(help="Experiment (config) name, e.g. smoke.")],
    bootstrap_id: Annotated[str | None, typer.Option("--bootstrap", help="A bootstrap id; default the newest.")] = None,
    store: StoreOption = Path("."),
) -> None:
    """Read the review queue's human labels back from MLflow: human-judge agreement per judge, and the gold pairs
    the bootstrap's next round adds to its training pairs."""
    from flows.console import print_review
    from registry import compare, lineage, review

    client = store_client(store)
    try:
        found, _, _ = compare.round_table(client, experiment, bootstrap_id)
    except ValueError as err:
        fail(str(err))
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    print_review(found, review.labelled(lineage.tracking_uri_for(store), experiment_id, found), experiment_id)


@app.command()
def serve(
    project: Annotated[Path, typer.Option(help="Directory with prefect.yaml.")] = Path("."),
) -> None:
    """Serve the deployments declared in prefect.yaml from this process (needs a Prefect server: PREFECT_API_URL)."""
    import threading

    from prefect import serve as prefect_serve
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        fail("ratchet serve needs a Prefect server: start `prefect server start` and set PREFECT_API_URL")
    from flows.serving import declared_deployments, worker_conflict, write_forms_once_served

    deployments = declared_deployments(project)
    conflict = worker_conflict(deployments)
    if conflict:
        fail(conflict)
    bootstraps = {d.name for d in deployments if d.flow_name == "bootstrap"}
    threading.Thread(target=write_forms_once_served, args=(project.resolve(), bootstraps), daemon=True).start()
    prefect_serve(*deployments)


if __name__ == "__main__":
    app()
