"""The run store's memo: a value is computed once by content, and a change in anything its key holds computes it
again (the evaluate stage on the tiny model, every memoised kind of value: answers, verifier results, judge scores,
log-probs; the program judge's check results)."""

import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_program_judge import CHECKS, LOWERCASE_NO_COMMA, tiny_pointwise_judge

from components.code_version import NAMESPACE_CODE, code_closure, code_version, namespace_version
from components.config.loading import load_config
from components.evaluate_stage import evaluate
from components.judging.program_judge import ProgramJudge
from components.memo import Memo, directory_digest
from components.models import Policy
from components.requests import evaluate_request


def test_cached_computes_what_is_missing_once_and_a_new_memo_on_the_same_store_finds_it(tmp_path):
    calls = []

    def square(values):
        def compute(missing):
            calls.append([values[i] for i in missing])
            return [values[i] ** 2 for i in missing]

        return compute

    memo = Memo(tmp_path)
    assert memo.cached("squares", ["a", "b", "a"], square([2, 3, 2])) == [4, 9, 4]
    assert calls == [[2, 3]]  # "a" asked twice, computed once
    again = Memo(tmp_path)  # as the next round's process would open it
    assert again.cached("squares", ["b", "c"], square([3, 5])) == [9, 25]
    assert calls[-1] == [5] and (again.hits, again.misses) == (1, 1)
    assert Memo(tmp_path).cached("cubes", ["b"], lambda missing: [27]) == [27]  # another namespace: its own values
    # Another code version (components/ or a library changed) finds nothing the old code stored.
    assert Memo(tmp_path, version="other").lookup("squares", ["a", "b"]) == {}
    # Without a store nothing is kept, and everything is computed.
    assert Memo(None).cached("squares", ["a", "a"], square([2, 2])) == [4, 4] and calls[-1] == [2]


def test_a_namespace_is_versioned_by_the_code_that_computes_it_and_nothing_else(tmp_path):
    """A change in a module that a namespace's code imports (however deep, even inside a function) or starts with
    `-m` makes new keys; a change anywhere else keeps the values."""
    sources = {
        "__init__.py": "",
        "judging/__init__.py": "",
        "judging/scorer.py": "from components.config import settings\ndef score():\n    from components import maths\n",
        "config/__init__.py": "",
        "config/settings.py": "BATCH = 8\n",
        "maths.py": "import json\nCOMMAND = ['python', '-m', 'components.worker']\n",
        "worker.py": "",
        "training.py": "from components.judging import scorer\n",
    }
    for name, source in sources.items():
        (tmp_path / "components" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "components" / name).write_text(source)
    roots = ["components.judging.scorer"]
    closure = {str(p.relative_to(tmp_path / "components")) for p in code_closure(roots, tmp_path)}
    assert closure == set(sources) - {"training.py", "config/__init__.py", "config/settings.py"}
    before = code_version(roots, tmp_path)
    (tmp_path / "components/training.py").write_text("from components.judging import scorer  # retrained\n")
    (tmp_path / "components/config/settings.py").write_text("BATCH = 16  # a setting's value is in the key\n")
    assert code_version(roots, tmp_path) == before
    for changed in ("maths.py", "worker.py", "judging/__init__.py"):
        with (tmp_path / "components" / changed).open("a") as source:
            source.write("# changed\n")
        assert code_version(roots, tmp_path) != before, changed
        before = code_version(roots, tmp_path)

    # The shipped namespaces: the judge's scores are kept across a change in training, not in its scorer or model.
    scores = {p.name for p in code_closure(NAMESPACE_CODE["scores"])}
    assert {"scorers.py", "build_judges.py", "models.py", "memo.py"} <= scores
    assert not {"trainer.py", "pair_selection.py", "stages.py", "report.py"} & scores
    assert "vllm_worker.py" in {p.name for p in code_closure(NAMESPACE_CODE["answers"])}  # started with -m
    assert namespace_version("scores") != namespace_version("verifier") != namespace_version("squares")


def test_a_killed_computation_keeps_the_chunks_it_finished(tmp_path):
    def fail_on_third_chunk(missing):
        if missing[0] >= 4:
            raise KeyboardInterrupt
        return [str(i) for i in missing]

    keys = [f"k{i}" for i in range(6)]
    with pytest.raises(KeyboardInterrupt):
        Memo(tmp_path).cached("numbers", keys, fail_on_third_chunk, chunk=2)
    resumed = Memo(tmp_path)
    assert resumed.cached("numbers", keys, lambda missing: [f"again {i}" for i in missing], chunk=2) == [
        "0",
        "1",
        "2",
        "3",
        "again 4",
        "again 5",
    ]


def test_a_model_digest_follows_the_weights_not_the_path(tiny_model_dir, tmp_path):
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "copy"))
    assert directory_digest(copy) == directory_digest(tiny_model_dir)
    perturb(copy)
    assert directory_digest(copy) != directory_digest(tiny_model_dir)


def perturb(model_dir: Path) -> None:
    """Change one weight of a checkpoint in place."""
    weights = load_file(model_dir / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})


def test_the_program_judge_writes_and_runs_each_check_once_across_rounds(tiny_model_dir, tmp_path):
    written = []

    def write(instruction: str) -> str:
        written.append(instruction)
        return CHECKS[instruction]

    items = [(LOWERCASE_NO_COMMA, "all small, no", "all small no commas")]
    fallback = tiny_pointwise_judge(tiny_model_dir)
    first = ProgramJudge("program", write, fallback, Memo(tmp_path)).judge(items)
    checked = count_rows(tmp_path)["checks"]
    assert checked == 6  # three checks on two answers
    # The MemoScorer (build.make_judge) keeps what the model wrote; here the writer is given, so it is called.
    later = ProgramJudge("program", write, fallback, Memo(tmp_path))
    assert later.judge(items) == first and count_rows(tmp_path)["checks"] == checked
    assert later.judge([(LOWERCASE_NO_COMMA, "all small, no", "A new answer")]) and count_rows(tmp_path)["checks"] == 9


def count_rows(memo_dir: Path) -> dict[str, int]:
    with sqlite3.connect(memo_dir / "memo.sqlite") as db:
        return dict(db.execute("SELECT namespace, count(*) FROM memo GROUP BY namespace").fetchall())


def stored(memo_dir: Path) -> dict[str, int]:
    """What the memo holds: rows per namespace, and the policies' answer sets."""
    return count_rows(memo_dir) | {"answers": len(list((memo_dir / "answers").iterdir()))}


@pytest.fixture(scope="module")
def evaluated_once(tiny_model_dir, write_tiny_config, random_adapter, tmp_path_factory):
    """The evaluate stage run once (base against base + a1): its config, policies and the memo it filled."""
    tmp = tmp_path_factory.mktemp("memo")
    cfg = load_config(write_tiny_config(tmp))
    champion = Policy(tiny_model_dir)
    challenger = champion.with_adapter(random_adapter(tiny_model_dir, 1, tmp / "a1"))
    evaluate(evaluate_request(cfg, champion, challenger, tmp / "eval", tmp / "memo"))
    return cfg, champion, challenger, tmp


def other_judge_weights(cfg, tmp: Path):
    judge_dir = Path(shutil.copytree(cfg.evaluation.judge.model, tmp / "other-judge"))
    perturb(judge_dir)
    return section(cfg, "evaluation", judge=cfg.evaluation.judge.model_copy(update={"model": str(judge_dir)}))


def edited_prompt(cfg, tmp: Path):
    lines = Path(cfg.data.eval_prompts).read_text().splitlines()
    lines[0] = lines[0].replace("topic 0", "topic zero")
    (tmp / "edited.jsonl").write_text("\n".join(lines) + "\n")
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"eval_prompts": str(tmp / "edited.jsonl")})})


def section(cfg, name: str, **values):
    return cfg.model_copy(update={name: getattr(cfg, name).model_copy(update=values)})


def judge_rubric(cfg, rubric: str):
    judge = cfg.evaluation.judge.model_copy(update={"rubric": rubric})
    return section(cfg, "evaluation", judge=judge)


NEW_ANSWERS = {"answers", "verifier", "scores", "logprobs"}  # everything that reads an answer
# Each change, and what it must compute again (every other memoised value is reused).
CHANGES = {
    "nothing": (lambda cfg, tmp: cfg, set()),
    "the training samples' temperature": (lambda cfg, tmp: section(cfg, "generation", temperature=0.5), set()),
    "the judge's rubric": (lambda cfg, tmp: judge_rubric(cfg, "follows-instructions"), {"scores"}),
    "the judge's weights": (other_judge_weights, {"scores"}),
    "the token cap": (lambda cfg, tmp: section(cfg, "evaluation", max_new_tokens=6), NEW_ANSWERS),
    "a prompt's text": (edited_prompt, NEW_ANSWERS),
    "the challenger's weights": (None, NEW_ANSWERS),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_second_evaluation_reuses_everything_but_what_a_changed_input_decides(
    change, evaluated_once, random_adapter, tmp_path
):
    cfg, champion, challenger, first = evaluated_once
    memo = Path(shutil.copytree(first / "memo", tmp_path / "memo"))
    before = stored(memo)
    changed, recomputed = CHANGES[change]
    if changed is None:  # another adapter (seed 2): a new challenger, the same champion
        challenger = champion.with_adapter(random_adapter(cfg.models.policy, 2, tmp_path / "a1"))
    else:
        cfg = changed(cfg, tmp_path)
    evaluate(evaluate_request(cfg, champion, challenger, tmp_path / "eval", memo))
    after = stored(memo)
    grew = {name for name in after if after[name] > before.get(name, 0)}
    assert grew == recomputed, (before, after)


def test_memoised_log_probs_equal_computed_ones(evaluated_once, tmp_path):
    """The same evaluation from a full memo and from an empty one gives the same metrics."""
    cfg, champion, challenger, first = evaluated_once
    memo = Path(shutil.copytree(first / "memo", tmp_path / "memo"))
    reused = evaluate(evaluate_request(cfg, champion, challenger, tmp_path / "reused", memo)).metrics
    fresh = evaluate(evaluate_request(cfg, champion, challenger, tmp_path / "fresh", tmp_path / "empty-memo")).metrics
    assert reused.keys() == fresh.keys()
    for name, value in fresh.items():
        assert reused[name] == pytest.approx(value, rel=1e-4, abs=1e-4, nan_ok=True), name
    assert torch.isfinite(torch.tensor(fresh["drift/kl_per_token"]))
