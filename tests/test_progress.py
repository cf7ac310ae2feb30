"""Long work reports its progress as log lines too, where no bar shows (the Prefect UI, a redirected run)."""

import logging

from components.progress import progress


def test_each_tenth_of_the_work_is_logged_after_its_item_is_done(caplog):
    done = []
    with caplog.at_level(logging.INFO, logger="components.progress"):
        for item in progress(range(25), "judge x", "check"):
            done.append(item)
            assert len(caplog.records) == sum(-(-25 * k // 10) < len(done) for k in range(1, 11))
    assert done == list(range(25))
    counts = [r.getMessage().split(": check ")[1].split(" ")[0] for r in caplog.records]
    assert counts == ["3/25", "5/25", "8/25", "10/25", "13/25", "15/25", "18/25", "20/25", "23/25", "25/25"]
    assert caplog.records[-1].getMessage().endswith("about 0s left")


def test_less_work_than_ten_items_logs_each_item_once_and_none_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="components.progress"):
        assert list(progress(["a", "b", "c"], "generate x4", "batch")) == ["a", "b", "c"]
        assert list(progress([], "generate x4", "batch")) == []
    assert [r.getMessage()[:25] for r in caplog.records] == [
        "generate x4: batch 1/3 in",
        "generate x4: batch 2/3 in",
        "generate x4: batch 3/3 in",
    ]
