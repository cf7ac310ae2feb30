"""Prompt cohorts in and stage outputs out, all as Hugging Face `datasets`.

Prompt rows: id, prompt, cohort, check (JSON spec or ""), context ("" when none).
Every stage writes its output with `write_atomically`: a temp dir renamed into place, so a crash never leaves a
directory that looks complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk

from components.checks import validate_check
from components.config.cohorts import COHORTS, SCENARIO_COHORTS


class DataError(ValueError):
    """Bad prompt data; the message names the file and the row."""


def load_prompts(path: str | Path, limit: int | None = None) -> Dataset:
    """Load and validate a prompt file (.jsonl, .json, .parquet or a saved dataset dir)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: prompt file not found")
    try:
        if path.is_dir():
            ds = load_from_disk(str(path))
        else:
            kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
            if kind is None:
                raise DataError(f"{path}: unsupported prompt file type '{path.suffix}' (use .jsonl, .parquet or a dir)")
            if kind == "json":
                _check_json_bytes(path)
            ds = load_dataset(kind, data_files=str(path), split="train")
    except DataError:
        raise
    except Exception as err:  # datasets wraps JSON/Arrow/Unicode errors in many types
        raise DataError(f"{path}: cannot read prompts: {str(err).splitlines()[0]}") from err
    ds = _with_optional_columns(ds)
    _validate(ds, path)
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def _check_json_bytes(path: Path) -> None:
    """Name the line of a non-UTF-8 byte, and refuse an empty file, before `datasets` turns either into a riddle."""
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: no prompts")
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: line {number}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def _with_optional_columns(ds: Dataset) -> Dataset:
    for column in ("check", "context"):
        if column not in ds.column_names:
            ds = ds.add_column(column, [""] * len(ds))
    return ds


def _validate(ds: Dataset, path: Path) -> None:
    missing = {"id", "prompt", "cohort"} - set(ds.column_names)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if len(ds) == 0:
        raise DataError(f"{path}: no prompts")
    seen: set[str] = set()
    for i, row in enumerate(ds):
        where = f"{path}: row {i + 1} (id {row['id']!r})"
        if not str(row["prompt"] or "").strip():
            raise DataError(f"{where}: empty prompt")
        if row["id"] in seen:
            raise DataError(f"{where}: duplicate id")
        seen.add(row["id"])
        if row["cohort"] not in COHORTS + SCENARIO_COHORTS:
            raise DataError(
                f"{where}: unknown cohort {row['cohort']!r} (known: {', '.join(COHORTS + SCENARIO_COHORTS)})"
            )
        if row["check"]:
            try:
                validate_check(json.loads(row["check"]))
            except (ValueError, TypeError) as err:
                raise DataError(f"{where}: bad check spec: {err}") from err


def check_disjoint(train: Dataset, heldout: Dataset) -> None:
    """Training and held-out prompts must not share ids or text, or the evaluation measures memory."""
    shared_ids = set(train["id"]) & set(heldout["id"])
    shared_text = set(train["prompt"]) & set(heldout["prompt"])
    if shared_ids or shared_text:
        example = sorted(shared_ids or shared_text)[0]
        raise DataError(
            f"train and held-out prompts overlap ({len(shared_ids | shared_text)} shared, e.g. {example!r})"
        )


def user_message(row: dict) -> str:
    """The text the policy sees: the context (if any) fenced above the request."""
    if row.get("context"):
        return f'Context:\n"""\n{row["context"]}\n"""\n\n{row["prompt"]}'
    return row["prompt"]


@contextmanager
def write_atomically(target: Path):
    """Yield a temp dir beside `target`; rename it to `target` only if the block completes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed run; never read
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_stage(target: Path, build: Callable[[Path], dict], record: str = "stage.json") -> dict:
    """Run `build(tmp_dir)` and publish its output at `target`, unless a finished `target` already exists.

    `build` returns the stage's small record (counts, metrics), kept as `target/<record>`: what the flow needs
    from a stage, returned again when a re-run finds the stage finished.
    """
    if not target.exists():
        with write_atomically(target) as tmp:
            (tmp / record).write_text(json.dumps(build(tmp), indent=2))
    return json.loads((target / record).read_text())


def save_rows(rows: list[dict], directory: Path) -> None:
    Dataset.from_list(rows).save_to_disk(str(directory))


def load_rows(directory: str | Path) -> Dataset:
    return load_from_disk(str(directory))
