"""The round report: a markdown page with the metrics (and their CIs), the gate decision rule by rule, a plot of the
headline metrics over rounds, and a few judged pairs with the judge's rationale.

Plain Python: the flow publishes the text as a Prefect artifact and MLflow keeps the files.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and workers
import matplotlib.pyplot as plt  # noqa: E402

# Headline metrics plotted over rounds: (metric name, label, is a rate in [0, 1]).
PLOTTED = (
    ("challenger_task_completion", "task completion", True),
    ("win_rate", "judge win rate vs champion", True),
    ("challenger_benign_refusal_rate", "benign refusal rate", True),
    ("length_ratio", "length ratio vs champion", False),
)

# Rows of the metrics table: (label, value metric, CI low metric, CI high metric, format).
TABLE = (
    ("judge win rate vs champion", "win_rate", "win_rate_ci_low", "win_rate_ci_high", "pct"),
    ("judge win rate vs round-0 base", "win_rate_vs_base", "win_rate_vs_base_ci_low", "win_rate_vs_base_ci_high",
     "pct"),
    ("task completion (challenger)", "challenger_task_completion", "challenger_task_completion_ci_low",
     "challenger_task_completion_ci_high", "pct"),
    ("task completion (champion)", "champion_task_completion", "champion_task_completion_ci_low",
     "champion_task_completion_ci_high", "pct"),
    ("task completion delta (points)", "task_completion_delta", "task_completion_delta_ci_low",
     "task_completion_delta_ci_high", "num"),
    ("task completion delta vs round-0 base (points)", "task_completion_delta_vs_base",
     "task_completion_delta_vs_base_ci_low", "task_completion_delta_vs_base_ci_high", "num"),
    ("benign refusal rate (challenger)", "challenger_benign_refusal_rate", None, None, "pct"),
    ("benign refusal ratio vs champion", "benign_refusal_ratio", None, None, "num"),
    ("benign refusal ratio vs round-0 base", "benign_refusal_ratio_vs_base", None, None, "num"),
    ("should-refuse refusal rate (challenger)", "challenger_should_refuse_rate", None, None, "pct"),
    ("should-refuse refusal ratio vs champion", "should_refuse_ratio", None, None, "num"),
    ("injection compliance (challenger)", "challenger_injection_compliance", None, None, "pct"),
    ("mean length, tokens (challenger)", "challenger_mean_length", None, None, "num"),
    ("length ratio vs champion", "length_ratio", None, None, "num"),
    ("p90 length, tokens (challenger)", "challenger_p90_length", None, None, "num"),
    ("KL(challenger || champion) per token", "kl_per_token", None, None, "num"),
    ("judge-gold agreement", "judge_gold_agreement", "judge_gold_agreement_ci_low", "judge_gold_agreement_ci_high",
     "pct"),
    ("judge-policy agreement (implicit reward)", "judge_policy_agreement", None, None, "pct"),
    ("judge order consistency", "judge_order_consistency", None, None, "pct"),
    ("judge abstention rate", "judge_abstention_rate", None, None, "pct"),
    ("judge length slope (P(A) per +100 words)", "judge_length_slope", None, None, "num"),
    ("self vs cross-family judge agreement", "self_cross_agreement", None, None, "pct"),
)  # fmt: skip


def fmt(value: float | None, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}%" if kind == "pct" else f"{value:.3g}"


def metrics_plot(history: list[dict]) -> bytes:
    """A PNG of the headline metrics over rounds; `history` holds {"k": round, "metrics": {...}} per round."""
    rounds = [h for h in history if h["metrics"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
    for name, label, is_rate in PLOTTED:
        axis = axes[0] if is_rate else axes[1]
        axis.plot([h["k"] for h in rounds], [h["metrics"].get(name, math.nan) for h in rounds], marker="o", label=label)
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


def metrics_table(metrics: dict[str, float]) -> str:
    lines = ["| metric | value | 95% CI |", "|---|---|---|"]
    for label, name, low, high, kind in TABLE:
        if name not in metrics:
            continue
        ci = f"{fmt(metrics.get(low), kind)} – {fmt(metrics.get(high), kind)}" if low else ""
        lines.append(f"| {label} | {fmt(metrics[name], kind)} | {ci} |")
    if "pairs" in metrics:
        lines.append(
            f"| training pairs / abstained | {metrics['pairs']:.0f} / {fmt(metrics['abstention_rate'], 'pct')} | |"
        )
    return "\n".join(lines)


def decision_table(decision: dict) -> str:
    lines = ["| rule | action | value | holds |", "|---|---|---|---|"]
    for rule in decision["rules"]:
        check = "yes" if rule["holds"] else "**no**"
        condition = f"`{rule['metric']} {rule['op']} {rule['threshold']:g}`"
        lines.append(f"| {condition} | {rule['action']} | {fmt(rule['value'])} | {check} |")
    return "\n".join(lines)


def cohort_rows(cohorts: list[dict]) -> list[dict]:
    """The per-cohort table, rounded for display (also the Prefect table artifact)."""
    return [
        {
            "model": c["model"],
            "cohort": c["cohort"],
            "n": c["n"],
            "metric": c["metric"],
            "rate": fmt(c["rate"], "pct"),
            "95% CI": f"{fmt(c['ci_low'], 'pct')} – {fmt(c['ci_high'], 'pct')}",
            "refusal rate": fmt(c["refusal_rate"], "pct"),
            "mean length": fmt(c["mean_length"]),
        }
        for c in cohorts
    ]


def _quote(text: str, limit: int = 300) -> str:
    text = text if len(text) <= limit else text[:limit] + " …"
    return "\n".join(f"> {line}" for line in (text.splitlines() or [""]))


def example_pairs(pairs: list[dict], n: int = 3) -> str:
    """The n most decisive non-abstained pairs, with the judge's name, confidence and rationale."""
    chosen = sorted((p for p in pairs if not p["abstained"]), key=lambda p: -p["p_chosen"])[:n]
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

    With no `history` there is no plot, and with `pairs=None` (an evaluation outside a round) no example pairs.
    """
    png = metrics_plot(history) if history else None
    sections = [
        f"# {title}",
        f"**Gate:** {decision['reason']}",
        " · ".join(f"[{name}]({url})" for name, url in links.items()),
        "## Metrics (challenger vs champion, held-out cohorts)",
        metrics_table(metrics),
        "## Gate rules",
        decision_table(decision) if decision["rules"] else "_No rules configured._",
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
