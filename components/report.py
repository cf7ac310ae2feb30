"""The round report: a markdown page with the metrics (and their CIs), the gate decision rule by rule, a plot of the
headline metrics over rounds, and a few judged pairs with the judge's rationale.

Plain Python: the flow publishes the text as a Prefect artifact and MLflow keeps the files. Labels and formats
come from the metrics catalogue (components/metrics.py).
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and workers
import matplotlib.pyplot as plt  # noqa: E402

from components.metrics import BY_KEY, CATALOGUE, show, show_ci  # noqa: E402

# Headline metrics plotted over rounds: (metric name, is a rate in [0, 1]).
PLOTTED = (
    ("task/challenger_task_completion", True),
    ("judge/win_rate", True),
    ("refusal/challenger_benign_refusal_rate", True),
    ("length/length_ratio", False),
)


def metrics_plot(history: list[dict]) -> bytes:
    """A PNG of the headline metrics over rounds; `history` holds {"k": round, "metrics": {...}} per round."""
    rounds = [h for h in history if h["metrics"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
    for name, is_rate in PLOTTED:
        axis = axes[0] if is_rate else axes[1]
        values = [h["metrics"].get(name, math.nan) for h in rounds]
        axis.plot([h["k"] for h in rounds], values, marker="o", label=BY_KEY[name].label)
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].axhline(1.0, color="grey", linewidth=0.8)
    for axis in axes:
        axis.set_xlabel("round")
        axis.legend(fontsize=8)
        axis.set_xticks([h["k"] for h in rounds] or [1])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def table_row(*cells: object) -> str:
    """A markdown table row whose cells cannot split it: a `|` inside a cell is escaped, a line break flattened."""
    escaped = (" ".join(str(c).split()).replace("|", "\\|") for c in cells)
    return "| " + " | ".join(escaped) + " |"


def metrics_table(metrics: dict[str, float]) -> str:
    """Every catalogued metric the round produced, in catalogue order, with its CI where it has one."""
    lines = ["| metric | value | CI |", "|---|---|---|"]
    for m in CATALOGUE:
        if m.key not in metrics:
            continue
        ci = "{} – {}".format(*show_ci(metrics, m.key))
        unit = " (points)" if m.format == "points" else ""
        lines.append(table_row(f"{m.label}{unit}", show(metrics[m.key], m.format), ci if m.ci else ""))
    return "\n".join(lines)


def decision_table(decision: dict) -> str:
    lines = ["| rule | action | value | holds |", "|---|---|---|---|"]
    for rule in decision["rules"]:
        check = "yes" if rule["holds"] else "**no**"
        condition = f"`{rule['metric']} {rule['op']} {rule['threshold']:g}`"
        lines.append(table_row(condition, rule["action"], show(rule["value"], "num"), check))
    return "\n".join(lines)


def cohort_rows(cohorts: list[dict]) -> list[dict]:
    """The per-cohort table, rounded for display (also the Prefect table artifact)."""
    return [
        {
            "model": c["model"],
            "cohort": c["cohort"],
            "n": c["n"],
            "metric": c["metric"],
            "rate": show(c["rate"], "pct"),
            "CI": f"{show(c['ci_low'], 'pct')} – {show(c['ci_high'], 'pct')}",
            "refusal rate": show(c["refusal_rate"], "pct"),
            "mean length": show(c["mean_length"], "num"),
        }
        for c in cohorts
    ]


def _quote(text: str, limit: int = 300) -> str:
    text = text if len(text) <= limit else text[:limit] + " …"
    return "\n".join(f"> {line}" for line in (text.splitlines() or [""]))


def example_pairs(chosen: list[dict]) -> str:
    """Judged pairs, with the judge's name, confidence and rationale."""
    if not chosen:
        return "_Every pair abstained this round._"
    parts = []
    for p in chosen:
        parts.append(
            f"**{p['prompt_id']}** ({p['cohort']}), judge `{p['judge']}`, P(chosen) = {p['p_chosen']:.2f}"
            f"{', orders agreed' if p['order_consistent'] else ''}\n\n{_quote(p['prompt'])}\n\n"
            f"chosen:\n\n{_quote(p['chosen'])}\n\nrejected:\n\n{_quote(p['rejected'])}\n\n"
            f"rationale: {p['rationale'] or '-'}"
        )
    return "\n\n---\n\n".join(parts)


def round_report(
    title: str, metrics: dict, decision: dict, history: list[dict], pairs: list[dict] | None, links: dict[str, str]
) -> tuple[str, bytes | None]:
    """The markdown page and the PNG it embeds (as a data URI, so the Prefect UI shows it without a file server).

    `history` holds {"k": round, "metrics": {...}} per round; with none there is no plot. `pairs` are the training
    judge's example pairs (None for an evaluation outside a round).
    """
    png = metrics_plot(history) if history else None
    sections = [
        f"# {title}",
        f"**Gate:** {decision['reason']}",
        " · ".join(f"[{name}]({url})" for name, url in links.items()),
        "## Metrics (challenger vs champion, held-out cohorts; CIs at the configured level)",
        metrics_table(metrics),
        "## Gate rules",
        decision_table(decision) if decision["rules"] else "_No rule was checked._",
    ]
    if png:
        sections += ["## Over rounds", f"![metrics over rounds]({_data_uri(png)})"]
    if pairs is not None:
        sections += ["## Example pairs from the training judge", example_pairs(pairs)]
    return "\n\n".join(sections), png


def write_report(directory: Path, markdown: str, png: bytes | None) -> None:
    """report.md (pointing at metrics.png instead of the inline image) and metrics.png."""
    directory.mkdir(parents=True, exist_ok=True)
    if png:
        (directory / "metrics.png").write_bytes(png)
        markdown = markdown.replace(_data_uri(png), "metrics.png")
    (directory / "report.md").write_text(markdown)


def _data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"
