"""The round's lines on the terminal: one when a round starts, one per finished stage with its time and its yield,
one with the gate's decision. They go to the Prefect UI as INFO lines, which the quiet terminal shows too
(flows/console.ConsoleFilter)."""

from __future__ import annotations

import time

from prefect import get_run_logger

from components import reward_stage, stages


def say(message: str, *args) -> None:
    """An INFO line for the Prefect UI that the quiet terminal shows too."""
    get_run_logger().info(message, *args, extra={"console": True})


def timed(k: int, name: str, call, *args):
    """`call(*args)`, then a line saying how long stage `name` of round k took and what it made."""
    started = time.perf_counter()
    result = call(*args)
    say("round %d · %-8s done in %s%s", k, name, _clock(time.perf_counter() - started), _summary(result))
    return result


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _summary(result) -> str:
    if isinstance(result, stages.Generated):
        return f": {result.samples} samples ({result.kind})"
    if isinstance(result, stages.Judged):
        return f": {result.pairs - result.abstained} pairs, {result.abstained} abstained"
    if isinstance(result, reward_stage.Rewarded) and result.path is None:
        return ": no pair to train on yet"
    if isinstance(result, reward_stage.Rewarded):
        accuracy = result.metrics.get("rm_heldout_accuracy", float("nan"))
        return f": {accuracy:.0%} right on {int(result.metrics['rm_heldout_pairs'])} held-out pairs"
    if isinstance(result, stages.Trained) and "steps" in result.metrics:
        return f": {int(result.metrics['steps'])} steps"
    return ""
