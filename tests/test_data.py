import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.data import COHORTS, DataError, check_disjoint, load_prompts, save_stage, write_atomically

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "script, files",
    [
        (
            "make_cohorts.py",
            ("train.jsonl", "heldout.jsonl", "judge_injection.jsonl", "gate_train.jsonl", "gate_heldout.jsonl"),
        ),
        ("make_calibration.py", ("judge_calibration.jsonl",)),
        (
            "make_efficacy_cohorts.py",
            (
                "efficacy_train.jsonl",
                "efficacy_heldout.jsonl",
                "word_limit_train.jsonl",
                "word_limit_heldout.jsonl",
                "goodhart_train.jsonl",
                "goodhart_heldout.jsonl",
            ),
        ),
    ],
)
def test_shipped_data_match_their_generator(script, files, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "data" / script), str(tmp_path)], check=True, capture_output=True)
    for name in files:
        assert (tmp_path / name).read_text() == (ROOT / "data" / name).read_text()


def test_the_efficacy_cohorts_are_large_graded_and_hold_out_templates_topics_instruction_sets_and_types():
    train, heldout = (
        load_prompts(ROOT / "data/efficacy_train.jsonl"),
        load_prompts(ROOT / "data/efficacy_heldout.jsonl"),
    )
    check_disjoint(train, heldout)
    assert len(train) >= 400 and sum(bool(r["check"]) for r in heldout) >= 250

    def types(rows) -> set[str]:
        return {
            i["instruction_id"]
            for r in rows
            if r["cohort"].startswith("ifeval")
            for i in json.loads(r["check"])["instructions"]
        }

    unseen = [r for r in heldout if r["cohort"] == "ifeval_unseen"]
    checkable = [r for r in heldout if r["check"]]
    assert len(unseen) >= 150 and len(unseen) >= 0.4 * len(checkable) and not types(unseen) & types(train)

    def instruction_set(row) -> frozenset:
        return frozenset(json.dumps(i, sort_keys=True) for i in json.loads(row["check"])["instructions"])

    learned = {instruction_set(r) for r in train if r["cohort"] == "ifeval"}
    held_out = [r for r in heldout if r["cohort"].startswith("ifeval")]
    assert not any(instruction_set(r) in learned for r in held_out)  # no set of instructions to learn by heart
    assert all("substance" in json.loads(r["check"]) for r in held_out)
    assert not any("substance" in r["check"] for r in train)  # the verifier that trains never sees it
    counts = [len(json.loads(r["check"])["instructions"]) for r in train if r["cohort"] == "ifeval"]
    assert set(counts) == {1, 2, 3}  # graded: the share of 2 or 3 instructions met
    requests = {r["prompt"].split(".")[0] for r in train}
    assert not any(r["prompt"].split(".")[0] in requests for r in heldout if r["cohort"].startswith("ifeval"))


def test_the_calibration_set_has_160_known_pairs_in_eight_categories():
    from components.judge_check import load_calibration

    rows = load_calibration()
    categories = {r["category"] for r in rows}
    assert len(rows) == 160 and len(categories) == 8 and len({r["id"] for r in rows}) == 160
    assert all(r["cohort"] in COHORTS + ("false_premise",) for r in rows)
    assert sum(len(r["worse"].split()) > len(r["better"].split()) for r in rows) >= 40  # the longer one is worse


def test_shipped_train_and_heldout_are_disjoint_and_cover_every_cohort():
    train, heldout = load_prompts(ROOT / "data/train.jsonl"), load_prompts(ROOT / "data/heldout.jsonl")
    check_disjoint(train, heldout)
    shipped = {"arithmetic", "ifeval", "grounded", "benign", "should_refuse", "injection"}
    assert set(train["cohort"]) == set(heldout["cohort"]) == shipped and shipped <= set(COHORTS)
    checkable = [r for r in heldout if r["cohort"] in ("arithmetic", "ifeval", "grounded", "injection")]
    assert all(r["check"] for r in checkable)


def test_gate_scenario_cohorts_are_disjoint_and_hold_what_each_bias_needs():
    train, heldout = load_prompts(ROOT / "data/gate_train.jsonl"), load_prompts(ROOT / "data/gate_heldout.jsonl")
    check_disjoint(train, heldout)
    assert set(train["cohort"]) == {"arithmetic", "false_premise", "unanswerable"}
    assert set(heldout["cohort"]) == {"arithmetic", "benign", "false_premise"}
    premises = [r for r in heldout if r["cohort"] == "false_premise"]
    assert len(premises) == 24 and all(json.loads(r["check"])["kind"] == "number" for r in premises)


def test_word_limit_cohorts_carry_one_word_limit_each_and_benign_requests_held_out():
    """The reward-hacking scenario's data: every checkable prompt's only check is a word limit."""
    train = load_prompts(ROOT / "data/word_limit_train.jsonl")
    heldout = load_prompts(ROOT / "data/word_limit_heldout.jsonl")
    check_disjoint(train, heldout)
    checks = [json.loads(r["check"])["instructions"] for r in [*train, *heldout] if r["check"]]
    assert {i["instruction_id"] for c in checks for i in c} == {"length_constraints:number_words"}
    assert all(len(c) == 1 for c in checks) and len(checks) == 24 + 48
    assert set(heldout["cohort"]) == {"ifeval", "benign"}


def test_limit_keeps_all_cohorts_because_files_interleave():
    every = set(load_prompts(ROOT / "data/train.jsonl")["cohort"])
    assert set(load_prompts(ROOT / "data/train.jsonl", limit=12)["cohort"]) == every


def rows_file(tmp_path, rows) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GOOD = {"id": "a", "prompt": "hi", "cohort": "benign"}


@pytest.mark.parametrize(
    "rows, message",
    [
        ([GOOD, {**GOOD}], "row 2 (id 'a'): duplicate id"),
        ([GOOD, {**GOOD, "id": "b", "prompt": "  "}], "row 2 (id 'b'): empty prompt"),
        ([{**GOOD, "cohort": "misc"}], "unknown cohort 'misc'"),
        ([{**GOOD, "check": '{"kind": "number"}'}], "bad check spec"),
        ([{**GOOD, "check": "{not json"}], "bad check spec"),
        ([{"id": "a", "cohort": "benign"}], "missing column(s) prompt"),
    ],
)
def test_bad_prompt_rows_name_the_row(tmp_path, rows, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_prompts(rows_file(tmp_path, rows))


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_prompts(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a", "prompt": "\xff\xfe", "cohort": "benign"}\n')
    with pytest.raises(DataError, match="line 1: not valid UTF-8"):
        load_prompts(bad)
    (tmp_path / "x.csv").write_text("id,prompt\n")
    with pytest.raises(DataError, match="unsupported prompt file type '.csv'"):
        load_prompts(tmp_path / "x.csv")


def test_overlap_is_refused(tmp_path):
    a = load_prompts(rows_file(tmp_path, [GOOD]))
    with pytest.raises(DataError, match="overlap"):
        check_disjoint(a, a)


def test_failed_stage_leaves_nothing_that_looks_complete(tmp_path):
    target = tmp_path / "stage"

    def crash(tmp: Path) -> None:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_stage(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_finished_stage_is_not_rebuilt_and_stale_temp_dirs_are_cleared(tmp_path):
    target = tmp_path / "stage"
    (tmp_path / ".stage.tmp-killed").mkdir()  # what a kill -9 leaves behind

    def build(text: str):
        def write(tmp: Path) -> dict:
            (tmp / "out.txt").write_text(text)
            return {"text": text}

        return write

    assert save_stage(target, build("first")) == {"text": "first"}
    assert save_stage(target, build("second")) == {"text": "first"}  # the record of the finished stage
    assert (target / "out.txt").read_text() == "first" and (target / "stage.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]
    with write_atomically(tmp_path / "other") as tmp:
        assert tmp.name.startswith(".other.tmp-")


@pytest.mark.parametrize("name", ["efficacy_train.jsonl", "efficacy_heldout.jsonl", "train.jsonl", "heldout.jsonl"])
def test_every_shipped_check_runs_here(name):
    """Each check's checkers run without data this machine cannot download (NLTK's punkt_tab is one)."""
    from components.checks import score

    checks = {r["check"] for r in load_prompts(ROOT / "data" / name) if r["check"]}
    assert all(0.0 <= score(json.loads(check), "A short answer, in English.") <= 1.0 for check in checks)
