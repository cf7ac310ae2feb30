"""The `ratchet` command.

ratchet run configs/smoke.yaml [--rounds 3]      a bootstrap, then where to look
ratchet compare smoke                            the round-over-round table, from MLflow
ratchet promote smoke 3 / ratchet rollback smoke move the champion alias by hand (recorded in MLflow)
ratchet evaluate configs/smoke.yaml --challenger 3 --champion base
ratchet serve                                    serve prefect.yaml's deployments from this process
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network on these machines
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Prefect's temporary server gets 20 s to start; on 2 busy cores (two bootstraps, or a test suite, at once) that
# is not enough, and the run fails before any work. A slow start costs nothing when it is fast.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Iterative self-improvement by AI feedback.")


@app.callback()
def main() -> None:
    """Ratchet: iterative self-improvement by AI feedback, on Prefect and MLflow."""


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: 2 for input refused before any work, 1 for a run that failed."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def unwritable(directory: Path) -> str | None:
    """Why nothing can be written in `directory` (or its nearest existing parent), or None; writes nothing."""
    existing = next(p for p in (directory.resolve(), *directory.resolve().parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            return None
    except OSError as err:
        return err.strerror or str(err)


def preflight(config_path: Path, overrides: dict, store: Path) -> None:
    """Everything that can be checked before work starts; nothing is written if it fails."""
    from prefect.settings import get_current_settings

    from components.config import AIJudgeConfig, ConfigError, RemoteJudgeConfig, load_config, model_judges
    from components.data import DataError, check_disjoint, load_prompts
    from components.models import ModelSpecError, check_spec
    from components.remote_judge import RemoteJudgeError, api_key

    try:
        cfg = load_config(config_path, overrides)
        check_disjoint(load_prompts(cfg.data.train_prompts), load_prompts(cfg.data.eval_prompts))
        judges = [cfg.evaluation.judge, *model_judges(cfg.judge)]
        for spec in [cfg.models.policy] + [j.model for j in judges if isinstance(j, AIJudgeConfig)]:
            if spec != "self":
                check_spec(spec)
        for judge in judges:
            if isinstance(judge, RemoteJudgeConfig) and judge.api_key_env:
                api_key(judge.api_key_env)
    except (ConfigError, DataError, ModelSpecError, RemoteJudgeError) as err:
        fail(str(err))
    for what, directory in (("--store", store), ("workdir", Path(cfg.workdir))):
        problem = unwritable(directory)
        if problem:
            fail(f"{what} {directory}: cannot write there: {problem}")
    if cfg.gate.require_approval and not get_current_settings().api.url:
        fail(
            f"{config_path}: gate.require_approval pauses rounds for a reviewer, who needs a Prefect server: "
            "start `prefect server start`, set PREFECT_API_URL, or run it as a deployment"
        )


def parse_sets(items: list[str]) -> dict:
    """`key.path=value` pairs; values are read as JSON, else YAML, so 1e-4, true and [a, b] keep their types."""
    import json

    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--set {item!r}: expected key.path=value")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/smoke.yaml.")],
    rounds: Annotated[int | None, typer.Option(min=1, help="Override the config's number of rounds.")] = None,
    store: Annotated[Path, typer.Option(help="Directory holding mlflow.db and mlartifacts/.")] = Path("."),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value by dotted path, e.g. --set training.learning_rate=1e-4."),
    ] = None,
) -> None:
    """Run a bootstrap: N rounds of generate, judge, train, evaluate and gate."""
    from components.config import run_overrides

    overrides = parse_sets(set_ or [])
    preflight(config, run_overrides(rounds, overrides), store)
    from flows.bootstrap import bootstrap
    from registry.lineage import tracking_uri_for

    try:
        result = bootstrap(str(config), rounds, str(store), overrides or None)
    except Exception as err:  # the traceback is in the log above; the last line says what failed
        fail(f"the bootstrap failed: {type(err).__name__}: {one_line(err)}; re-run the same command to resume", 1)
    print_report(result, tracking_uri_for(store))


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


StoreOption = Annotated[Path, typer.Option(help="Directory holding mlflow.db and mlartifacts/.")]


@app.command()
def compare(
    experiment: Annotated[str, typer.Argument(help="Experiment (config) name, e.g. smoke.")],
    bootstrap_id: Annotated[str | None, typer.Option("--bootstrap", help="A bootstrap id; default the newest.")] = None,
    store: StoreOption = Path("."),
) -> None:
    """Print the round-over-round table of a bootstrap from MLflow (the numbers the MLflow compare view shows)."""
    from registry import lineage

    try:
        found, rows = lineage.round_table(_client(store), experiment, bootstrap_id)
    except ValueError as err:
        fail(str(err))
    typer.echo(f"bootstrap {found}")
    print_rounds([{"k": r["round"], "metrics": r, "reason": r["decision"]} for r in rows])


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
    from registry import lineage

    if to is None:
        try:
            to = lineage.previous_champion(_client(store), lineage.model_name_for(experiment))
        except (ValueError, lineage.MlflowException) as err:
            fail(str(err))
    _move(experiment, to, "rollback", reason, store)


def _move(experiment: str, version: str | None, action: str, reason: str, store: Path) -> None:
    from registry import lineage

    client = _client(store)
    try:
        if version is not None:
            version = lineage.resolve_version(client, lineage.model_name_for(experiment), version)
        run_id = lineage.move_champion(client, experiment, version, action, reason)
    except lineage.MlflowException as err:
        fail(f"{experiment}: {err.message}")
    now = f"version {version}" if version else "the base model"
    typer.echo(f"champion of {lineage.model_name_for(experiment)} is now {now}")
    typer.echo(f"recorded as MLflow run {run_id}")


def _client(store: Path):
    from registry import lineage

    if not (store / "mlflow.db").exists():
        fail(f"no MLflow store at {store.resolve() / 'mlflow.db'} (pass --store)")
    return lineage.client_for(lineage.tracking_uri_for(store))


@app.command("evaluate")
def evaluate_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose cohorts, judge and gate rules to use.")],
    challenger: Annotated[str, typer.Option(help="Version number, alias, or 'base'.")] = "challenger",
    champion: Annotated[str, typer.Option(help="Version number, alias, or 'base'.")] = "champion",
    store: StoreOption = Path("."),
) -> None:
    """Compare two registered checkpoints on the held-out cohorts (what the `evaluate` deployment runs)."""
    preflight(config, {}, store)
    from flows.evaluate import evaluate_checkpoints
    from registry import lineage

    _client(store)
    try:
        result = evaluate_checkpoints(str(config), challenger, champion, str(store))
    except (lineage.MlflowException, FileNotFoundError) as err:
        fail(str(err))
    print_rounds([{"k": result["name"], "metrics": result["metrics"], "reason": result["decision"]["reason"]}])
    typer.echo(f"\noutputs: {result['outputs']}\nmlflow run: {result['mlflow_run_id']}")


@app.command()
def serve(
    project: Annotated[Path, typer.Option(help="Directory with prefect.yaml.")] = Path("."),
) -> None:
    """Serve the deployments declared in prefect.yaml from this process (needs a Prefect server: PREFECT_API_URL)."""
    import yaml
    from prefect import serve as prefect_serve
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        fail("ratchet serve needs a Prefect server: start `prefect server start` and set PREFECT_API_URL")

    from flows.bootstrap import bootstrap
    from flows.evaluate import evaluate_checkpoints

    flows = {"flows/bootstrap.py:bootstrap": bootstrap, "flows/evaluate.py:evaluate_checkpoints": evaluate_checkpoints}
    declared = yaml.safe_load((project / "prefect.yaml").read_text())["deployments"]
    refuse_worker_deployments([f"{flows[d['entrypoint']].name}/{d['name']}" for d in declared])
    deployments = [
        flows[d["entrypoint"]].to_deployment(
            name=d["name"], parameters=d.get("parameters", {}), description=d.get("description"), tags=d.get("tags")
        )
        for d in declared
    ]
    prefect_serve(*deployments)


def refuse_worker_deployments(names: list[str]) -> None:
    """Served and worker deployments of the same name replace each other; refuse rather than half-replace one."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in names:
            try:
                pool = client.read_deployment_by_name(name).work_pool_name
            except ObjectNotFound:
                continue
            if pool:
                fail(
                    f"{name} is deployed to work pool '{pool}'; serve it or run a worker, not both "
                    f"(`prefect deployment delete {name}` first to serve it)"
                )


def _fmt(value: float | None, percent: bool = False, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.{digits}f}"


def print_rounds(rows: list[dict]) -> None:
    """One line per round (or evaluation): {"k", "metrics", "reason"}."""
    header = (
        f"{'round':>5}  {'judge win':>9}  {'task done':>9}  {'delta (95% CI)':>20}  {'benign refusal':>14}"
        f"  {'len ratio':>9}  gate"
    )
    typer.echo("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        m = r["metrics"]
        delta = f"{_fmt(m.get('task_completion_delta'))} ({_fmt(m.get('task_completion_delta_ci_low'))}, " + (
            f"{_fmt(m.get('task_completion_delta_ci_high'))})"
        )
        typer.echo(
            f"{r['k']:>5}  {_fmt(m.get('win_rate'), True):>9}  {_fmt(m.get('challenger_task_completion'), True):>9}"
            f"  {delta:>20}  {_fmt(m.get('challenger_benign_refusal_rate'), True):>14}"
            f"  {_fmt(m.get('length_ratio'), digits=2):>9}  {r['reason']}"
        )


def print_report(result: dict, tracking_uri: str) -> None:
    from registry.lineage import comparison_url

    print_rounds([{"k": r["k"], "metrics": r["metrics"], "reason": r["decision"]["reason"]} for r in result["rounds"]])
    champion = result["champion"]
    typer.echo(f"\nchampion: {champion['base']} + {len(champion['adapters'])} adapter(s)")
    typer.echo(f"outputs:  {result['workdir']}")
    typer.echo(f"mlflow:   {tracking_uri} (registered model {result['model_name']})")
    typer.echo("\nTo look at it:")
    typer.echo(f"  .venv/bin/ratchet compare {result['experiment']}")
    typer.echo(f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    typer.echo(f"  then open {comparison_url(result['experiment_id'])}")
    typer.echo("  .venv/bin/prefect server start   # then open http://127.0.0.1:4200/runs")


if __name__ == "__main__":
    app()
