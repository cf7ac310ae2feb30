"""What `ratchet` prints: the round table (columns and formats from the metrics catalogue) and where to look."""

from __future__ import annotations

import typer

from components.metrics import BY_KEY, show

DELTA = "task/task_completion_delta"  # the one column shown with its CI
# The table's columns: metric -> header.
COLUMNS = {
    "judge/win_rate": "judge win",
    "judge/judge_abstention_rate": "judge abstained",
    "task/challenger_task_completion": "task done",
    DELTA: "delta",
    "refusal/challenger_benign_refusal_rate": "benign refusal",
    "length/length_ratio": "len ratio",
}


def _cell(metrics: dict, name: str) -> str:
    m = BY_KEY[name]
    value = show(metrics.get(name), m.format)
    if name != DELTA:
        return value
    return (
        f"{value} ({show(metrics.get(f'{name}_ci_low'), m.format)}, {show(metrics.get(f'{name}_ci_high'), m.format)})"
    )


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
    from registry.lineage import comparison_url

    print_rounds([{"k": r.k, "metrics": r.metrics, "reason": r.decision.reason} for r in result.rounds], ci_level)
    champion = result.champion
    typer.echo(f"\nchampion: {champion.base} + {len(champion.adapters)} adapter(s)")
    typer.echo(f"outputs:  {result.workdir}")
    typer.echo(f"mlflow:   {tracking_uri} (registered model {result.model_name})")
    typer.echo("\nTo look at it:")
    typer.echo(f"  .venv/bin/ratchet compare {result.experiment}")
    typer.echo(f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    typer.echo(f"  then open {comparison_url(result.experiment_id)}")
    typer.echo("  .venv/bin/prefect server start   # then open http://127.0.0.1:4200/runs")


def print_judge_check(label: str, name: str, scores: dict[str, dict[str, float]], _rows, shortfalls: list[str]):
    """One judge's calibration table: a line per category and one for all pairs, then whether it meets the goal."""
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
    typer.echo("meets the goal" if not shortfalls else f"short of the goal: {'; '.join(shortfalls)}")
