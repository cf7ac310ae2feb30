"""How well a judge tells answers apart, measured on pairs whose better answer is known: the shipped calibration set
(data/judge_calibration.jsonl), or a user's own gold pairs (`ratchet judge-check --pairs FILE`).

Each pair is shown to the judge with the better answer as A on even rows and as B on odd rows (the judge itself
also swaps the order). Per category and overall: accuracy on the pairs it decided, the share it decided, how often
its two orders agreed, and its length slope (P(A) per +100 words of A over B; positive = it likes length).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import mean

from components.checks import validate_check
from components.config.experiment import ExperimentConfig
from components.config.judges import JudgeConfig, inner_judges
from components.evaluation.measures import CI
from components.evaluation.reliability import length_slope
from components.judging.judge import Judge, PanelJudge, Verdict

CALIBRATION_SET = Path(__file__).resolve().parents[1] / "data" / "judge_calibration.jsonl"

# The bar a judge should clear to be trusted with training pairs (issue 27); every category must clear CATEGORY_FLOOR.
GOAL = {"accuracy": 0.75, "decided": 0.60, "order_consistency": 0.70}
CATEGORY_FLOOR = 0.60


def load_calibration(path: Path = CALIBRATION_SET) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_gold(path: str | Path | None) -> list[dict]:
    """A user's gold pairs (`load_pairs`) when a file is named, else the calibration set."""
    return load_pairs(Path(path)) if path else load_calibration()


PAIR_FIELDS = ("prompt", "better", "worse", "category")
OPTIONAL_PAIR_FIELDS = ("id", "cohort", "context", "check")


def load_pairs(path: Path) -> list[dict]:
    """A user's gold pairs: JSON lines with `prompt`, `better`, `worse` and `category`, and optionally `id`,
    `cohort` (what a panel routes by; default the category), `context` and `check` (a verifier's spec, as JSON
    text). ValueError names the line and the field of the first row that is not one."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rows = [
        _pair(path, number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip()
    ]
    if not rows:
        raise ValueError(f"{path}: no pairs in it")
    seen = set()
    for row in rows:
        if row["id"] in seen:
            raise ValueError(f"{path}: id {row['id']!r} appears twice")
        seen.add(row["id"])
    return rows


def _pair(path: Path, number: int, line: str) -> dict:
    where = f"{path}: line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with {', '.join(PAIR_FIELDS)}")
    for field in PAIR_FIELDS:
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise ValueError(f"{where}: '{field}' must be a non-empty string")
    for field in OPTIONAL_PAIR_FIELDS:
        if field in row and not isinstance(row[field], str):
            raise ValueError(f"{where}: '{field}' must be a string")
    if row["better"] == row["worse"]:
        raise ValueError(f"{where}: 'better' and 'worse' are the same answer")
    if row.get("check"):
        try:
            validate_check(json.loads(row["check"]))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: 'check': {err}") from None
    defaults = {"id": f"{path.stem}-{number}", "cohort": row["category"], "context": "", "check": ""}
    return defaults | {k: v for k, v in row.items() if k in PAIR_FIELDS + OPTIONAL_PAIR_FIELDS}


def presented(rows: list[dict]) -> list[tuple[dict, str, str]]:
    """The judge items: (row, A, B) with the better answer as A on even rows and as B on odd rows."""
    return [(r, r["better"], r["worse"]) if i % 2 == 0 else (r, r["worse"], r["better"]) for i, r in enumerate(rows)]


def verdict_rows(rows: list[dict], verdicts: list[Verdict], judge_name: str = "") -> list[dict]:
    """One row per pair: what the judge said, which part of it said so (`judge_name` when the judge is not a
    composite), and whether it was right (None when it abstained)."""
    out = []
    for i, (row, verdict) in enumerate(zip(rows, verdicts, strict=True)):
        better_is_a = i % 2 == 0
        right = None if verdict.abstained else (verdict.p_a > 0.5) == better_is_a
        out.append(
            {
                "id": row["id"],
                "category": row["category"],
                "p_better": verdict.p_a if better_is_a else 1 - verdict.p_a,
                "abstained": verdict.abstained,
                "order_consistent": verdict.order_consistent,
                "right": right,
                "decided_by": "" if verdict.abstained else verdict.decided_by or judge_name,
                "rationale": verdict.rationale,
            }
        )
    return out


def summarise(items: list[tuple[dict, str, str]], verdicts: list[Verdict], ci: CI) -> dict[str, dict[str, float]]:
    """{"all": {...}, "<category>": {...}}: accuracy (with CI), decided, order_consistency, length_slope, n."""
    rows = verdict_rows([row for row, _, _ in items], verdicts)
    groups = {"all": list(range(len(rows)))}
    for i, row in enumerate(rows):
        groups.setdefault(row["category"], []).append(i)
    return {
        name: _scores([items[i] for i in idx], [verdicts[i] for i in idx], [rows[i] for i in idx], ci)
        for name, idx in groups.items()
    }


def _scores(items, verdicts: list[Verdict], rows: list[dict], ci: CI) -> dict[str, float]:
    right = [float(r["right"]) for r in rows if r["right"] is not None]
    low, high = ci(right)
    return {
        "accuracy": float(mean(right)) if right else float("nan"),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "decided": float(mean(not r["abstained"] for r in rows)),
        "order_consistency": float(mean(r["order_consistent"] for r in rows)),
        "length_slope": round(length_slope(items, verdicts), 4),  # a judge that abstains on all: 0, not 1e-16
        "n": float(len(rows)),
    }


def meets_goal(scores: dict[str, dict[str, float]]) -> list[str]:
    """What keeps a judge from the goal; empty when it meets it overall and in every category."""
    shortfalls = [
        f"{key} {scores['all'][key]:.2f} < {bar}" for key, bar in GOAL.items() if not scores["all"][key] >= bar
    ]
    for category, s in scores.items():
        if category != "all" and not s["accuracy"] >= CATEGORY_FLOOR:
            shortfalls.append(f"{category} accuracy {s['accuracy']:.2f} < {CATEGORY_FLOOR}")
    return shortfalls


def check(judge: Judge, rows: list[dict], ci: CI) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Run `judge` on the calibration rows: its scores and its verdict on every pair."""
    items = presented(rows)
    verdicts = judge.judge(items)
    return summarise(items, verdicts, ci), verdict_rows(rows, verdicts, judge.name)


def decided_by(rows: list[dict]) -> dict[str, int]:
    """How many pairs each part of a judge decided (a route, written checks, a pointwise fallback), most first."""
    counts = Counter(row["decided_by"] for row in rows if not row["abstained"])
    return dict(counts.most_common())


def judges_in(config: ExperimentConfig) -> dict[str, tuple[JudgeConfig, str | None]]:
    """Every judge an experiment config names, by where it sits, with the one cohort it is asked about (None: all):
    `training` (as configured, panel and all), each judge inside a training panel or combination, `evaluation`."""
    inside = {f"training.{path}": found for path, found in inner_judges(config.judge).items()}
    return {"training": (config.judge, None)} | inside | {"evaluation": (config.evaluation.judge, None)}


# What a cohort a model judge cannot see may be routed to (`ratchet judge-check --route COHORT=KIND`).
ROUTES = ("verifier", "refusal")


def routed(judge: Judge, routes: dict[str, str]) -> Judge:
    """`judge` with each cohort in `routes` handed to the judge of that kind (a panel of one model judge)."""
    from components.build_judges import route_judge

    by_cohort = {cohort: route_judge(kind) for cohort, kind in routes.items()}
    panel = PanelJudge(judge, judge, by_cohort, ties_to_default=False)  # its default is the judge itself
    panel.name = f"{judge.name} routed " + ",".join(f"{c}:{k}" for c, k in routes.items())
    return panel


def cohorts_of(rows: list[dict]) -> list[str]:
    return sorted({row["cohort"] for row in rows})


def parse_cohorts(items: list[str], rows: list[dict]) -> list[str]:
    """`ratchet judge-check --cohort` names; ValueError names the first that is not a cohort of the pairs `rows`."""
    cohorts = cohorts_of(rows)
    unknown = [item for item in items if item not in cohorts]
    if unknown:
        raise ValueError(f"{unknown[0]!r}: not a cohort of these pairs (one of {', '.join(cohorts)})")
    return items


def parse_routes(items: list[str], rows: list[dict]) -> dict[str, str]:
    """`cohort=kind` pairs (`ratchet judge-check --route`); ValueError names the first that is not one."""
    cohorts = cohorts_of(rows)
    routes = {}
    for item in items:
        cohort, _, kind = item.partition("=")
        if cohort not in cohorts or kind not in ROUTES:
            raise ValueError(
                f"{item!r}: expected COHORT=KIND, COHORT one of {', '.join(cohorts)}, KIND one of {', '.join(ROUTES)}"
            )
        routes[cohort] = kind
    return routes


def check_judges(
    config: ExperimentConfig,
    labels: list[str],
    report: Callable[[str, tuple], None],
    routes: dict[str, str] | None = None,
    cohorts: list[str] | None = None,
    pairs: list[dict] | None = None,
) -> dict[str, tuple]:
    """Each judge of `config` named in `labels` on the gold `pairs` (None: the calibration set; a panel's route
    sees its cohort's pairs only): label -> (judge name, scores, verdict rows), each passed to `report` as soon as
    it is measured. `routes` (cohort -> a ROUTES kind) hands those cohorts' pairs to that judge instead, as a panel
    would; `cohorts` keeps only those cohorts' pairs (None: all); a route whose cohort it leaves out is not
    measured."""
    from components.build_judges import make_judge
    from components.evaluation.measures import ci_for
    from components.models import Policy

    pairs = load_calibration() if pairs is None else pairs
    rows = [row for row in pairs if not cohorts or row["cohort"] in cohorts]
    ci = ci_for(config.evaluation)
    results = {}
    for label, (judge_config, cohort) in judges_in(config).items():
        asked = [r for r in rows if cohort in (None, r["cohort"])]
        if label not in labels or not asked:  # not asked for, or a panel's route whose cohort `cohorts` leaves out
            continue
        judge = make_judge(judge_config, Policy(config.models.policy), config.models)
        if routes:
            judge = routed(judge, routes)
        results[label] = (judge.name, *check(judge, asked, ci))
        report(label, results[label])
    return results
