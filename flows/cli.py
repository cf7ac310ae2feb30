"""The `ratchet` command: validate a config, run a bootstrap, and print where to look.

ratchet run configs/smoke.yaml [--rounds 3]
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network on these machines
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Iterative self-improvement by AI feedback.")


@app.callback()
def main() -> None:
    """Ratchet: iterative self-improvement by AI feedback, on Prefect and MLflow."""


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def preflight(config_path: Path, rounds: int | None) -> None:
    """Everything that can be checked before work starts; nothing is written if it fails."""
    from components.config import AIJudgeConfig, ConfigError, PanelJudgeConfig, load_config
    from components.data import DataError, check_disjoint, load_prompts
    from components.models import ModelSpecError, check_spec

    try:
        cfg = load_config(config_path, {"rounds": rounds} if rounds else None)
        check_disjoint(load_prompts(cfg.data.train_prompts), load_prompts(cfg.data.eval_prompts))
        judges = [cfg.evaluation.judge, cfg.judge.default if isinstance(cfg.judge, PanelJudgeConfig) else cfg.judge]
        for spec in [cfg.models.policy] + [j.model for j in judges if isinstance(j, AIJudgeConfig)]:
            if spec != "self":
                check_spec(spec)
    except (ConfigError, DataError, ModelSpecError) as err:
        fail(str(err))


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/smoke.yaml.")],
    rounds: Annotated[int | None, typer.Option(min=1, help="Override the config's number of rounds.")] = None,
    store: Annotated[Path, typer.Option(help="Directory holding mlflow.db and mlartifacts/.")] = Path("."),
) -> None:
    """Run a bootstrap: N rounds of generate, judge, train, evaluate and gate."""
    preflight(config, rounds)
    from flows.bootstrap import bootstrap
    from registry.lineage import tracking_uri_for

    result = bootstrap(str(config), rounds, str(store))
    print_report(result, tracking_uri_for(store))


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.1f}"


def print_report(result: dict, tracking_uri: str) -> None:
    from registry.lineage import comparison_url

    header = f"{'round':>5}  {'judge win':>9}  {'task done':>9}  {'benign refusal':>14}  {'mean len':>8}  gate"
    typer.echo("\n" + header + "\n" + "-" * len(header))
    for r in result["rounds"]:
        m = r["metrics"]
        typer.echo(
            f"{r['k']:>5}  {_fmt(m.get('win_rate'), True):>9}  {_fmt(m.get('challenger_task_completion'), True):>9}"
            f"  {_fmt(m.get('challenger_benign_refusal_rate'), True):>14}  {_fmt(m.get('challenger_mean_length')):>8}"
            f"  {r['decision']['reason']}"
        )
    champion = result["champion"]
    typer.echo(f"\nchampion: {champion['base']} + {len(champion['adapters'])} adapter(s)")
    typer.echo(f"outputs:  {result['workdir']}")
    typer.echo(f"mlflow:   {tracking_uri} (registered model {result['model_name']})")
    typer.echo("\nTo look at it:")
    typer.echo(f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    typer.echo(f"  then open {comparison_url(result['experiment_id'])}")
    typer.echo("  .venv/bin/prefect server start   # then open http://127.0.0.1:4200/runs")


if __name__ == "__main__":
    app()
