"""`ratchet evaluate` and `ratchet export`: the commands on registered checkpoints (flows/cli.py registers them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from components.export import GGUF_TYPES, LLAMA_CPP_CONVERTER, export_policy
from flows.arguments import StoreOption, VerboseOption, checked_config, store_client
from flows.console import fail, print_rounds, stopped


def evaluate_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose cohorts, judge and gate rules to use.")],
    challenger: Annotated[str, typer.Option(help="Version number, alias, or 'base'.")] = "challenger",
    champion: Annotated[str, typer.Option(help="Version number, alias, or 'base'.")] = "champion",
    store: StoreOption = Path("."),
    verbose: VerboseOption = False,
) -> None:
    """Compare two registered checkpoints on the held-out cohorts (what the `evaluate` deployment runs)."""
    cfg = checked_config(config, {}, store, verbose)
    from flows.evaluate import evaluate_checkpoints
    from flows.runtime import Stopped, prefect_api, stop_on_signals
    from registry import versions

    store_client(store)
    try:
        with stop_on_signals(), prefect_api():
            result = evaluate_checkpoints(str(config), challenger, champion, str(store))
    except (versions.MlflowException, FileNotFoundError) as err:
        fail(str(err))
    except Stopped as stop:
        stopped(f"stopped by {stop}", 128 + stop.signum)
    row = {"k": result["name"], "metrics": result["metrics"], "reason": result["decision"]["reason"]}
    print_rounds([row], cfg.evaluation.ci_level)
    typer.echo(f"\noutputs: {result['outputs']}\nmlflow run: {result['mlflow_run_id']}")


def export_command(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose registered model to export.")],
    version: Annotated[str, typer.Option(help="Version number or alias.")] = "champion",
    out: Annotated[Path | None, typer.Option(help="Where to write (default: WORKDIR/exports/NAME-vN).")] = None,
    gguf: Annotated[str, typer.Option(help=f"The GGUF file's type: {', '.join(GGUF_TYPES)}, or none.")] = "q8_0",
    store: StoreOption = Path("."),
    verbose: VerboseOption = False,
) -> None:
    """Write a registered version as a merged Hugging Face checkpoint, a GGUF file with an Ollama Modelfile, and its
    adapter chain, recorded in MLflow."""
    if gguf not in (*GGUF_TYPES, "none"):
        fail(f"--gguf {gguf}: not one of {', '.join(GGUF_TYPES)}, none")
    if gguf != "none" and not LLAMA_CPP_CONVERTER.exists():
        fail(f"--gguf {gguf}: llama.cpp's converter is not installed ({LLAMA_CPP_CONVERTER}); run make setup-judge")
    cfg = checked_config(config, {}, store, verbose)
    from components.model_card import base_license, model_card
    from flows.evaluate import resolve
    from registry import lineage, versions
    from registry.card import card_facts

    uri = lineage.tracking_uri_for(store)
    try:
        label, policy = resolve(cfg, uri, version)
    except (versions.MlflowException, FileNotFoundError) as err:
        fail(str(err))
    if not policy.adapters:
        fail(f"--version {version}: the base model has no adapter to export; it is {policy.base}")
    target = out or Path(cfg.workdir).resolve() / "exports" / f"{cfg.name}-{label}"
    if target.exists():
        fail(f"{target} exists; remove it or pass another --out")
    number = label.removeprefix("v")
    card = model_card(card_facts(uri, versions.model_name_for(cfg.name), number), base_license(policy.base))
    exported = export_policy(policy, cfg.models, target, None if gguf == "none" else gguf, card)
    experiment_id = lineage.ensure_experiment(lineage.client_for(uri), cfg.name, lineage.artifact_root_for(store))
    merged = exported["merged"]
    run_id = lineage.log_export(uri, experiment_id, number, exported)
    tags = {"adapter_version": number, "sha256": merged["sha256"]}
    served = versions.register_merged(uri, versions.model_name_for(cfg.name), run_id, Path(merged["path"]), tags)
    for form, found in exported.items():
        typer.echo(f"{form}: {found['path']} (sha256 {found['sha256'][:12]})")
    name = f"{versions.model_name_for(cfg.name)}-merged"
    typer.echo(f"recorded as MLflow run {run_id}; serve it: mlflow models serve -m models:/{name}/{served}")
