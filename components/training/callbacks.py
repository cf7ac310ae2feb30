"""The Trainer callbacks every training stage adds: a time budget, and a progress bar with a log line per step."""

from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm
from transformers import TrainerCallback

log = logging.getLogger(__name__)


class TimeBudget(TrainerCallback):
    """Ends training before a step that would end past `seconds`, judged by the mean step so far (the first step
    always runs)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.steps = time.perf_counter(), 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        elapsed = time.perf_counter() - self.started
        if elapsed + elapsed / self.steps > self.seconds:
            control.should_training_stop = True


class StepProgress(TrainerCallback):
    """A progress bar over the optimiser steps, and each logged step's numbers as a log line rather than a dict
    printed on the terminal (the Trainer's PrinterCallback, which this replaces)."""

    def __init__(self, desc: str):
        self.desc = desc

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(
            total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step", leave=False, disable=None
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        log.info("%s step %d/%d: %s", self.desc, state.global_step, state.max_steps, logs)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()
