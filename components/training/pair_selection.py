"""Which of a round's judged pairs DPO trains on, in TRL's conversational format: the decided ones, optionally as
many whose chosen answer is longer as shorter, and at most `max_pairs` of them, the widest margins first."""

from __future__ import annotations

from datasets import Dataset


def clearest(pairs: Dataset, limit: int | None, length_balanced: bool) -> Dataset:
    """The decided pairs (`length_balanced`: as many whose chosen answer is longer as shorter), or the `limit` of
    them with the widest margins (ties in their order), in their order."""
    kept = pairs.filter(lambda row: not row["abstained"])
    rows = kept.to_list()
    chosen = balanced_by_length(rows) if length_balanced else list(range(len(rows)))
    if limit is not None and len(chosen) > limit:
        chosen = sorted(widest_margins(rows, chosen)[:limit])
    return kept.select(chosen)


def widest_margins(rows: list[dict], indices) -> list[int]:
    """`indices` of `rows`, the widest margin first (then the surest verdict, then their order)."""
    return sorted(indices, key=lambda i: (-rows[i].get("margin", 0.0), -rows[i]["p_chosen"], i))


def balanced_by_length(rows: list[dict]) -> list[int]:
    """The indices of the pairs kept when as many chosen answers are longer than their rejected ones (in words) as
    are shorter: the more common side keeps its widest margins. Pairs of equal length all stay."""

    def direction(row: dict) -> int:
        chosen, rejected = len(row["chosen"].split()), len(row["rejected"].split())
        return (chosen > rejected) - (chosen < rejected)

    longer = [i for i, row in enumerate(rows) if direction(row) > 0]
    shorter = [i for i, row in enumerate(rows) if direction(row) < 0]
    fewer, more = sorted((longer, shorter), key=len)
    dropped = set(widest_margins(rows, more)[len(fewer) :])
    return [i for i in range(len(rows)) if i not in dropped]


def to_conversational(pairs: Dataset, limit: int | None, length_balanced: bool) -> Dataset:
    """TRL's conversational preference format (so it applies the policy's own chat template), of the decided pairs
    or the `limit` clearest of them (`length_balanced`: see `clearest`)."""
    kept = clearest(pairs, limit, length_balanced)
    return kept.map(
        lambda row: {
            "prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        },
        remove_columns=kept.column_names,
    )
