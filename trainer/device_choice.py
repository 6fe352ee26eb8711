"""`train.gpus: auto`: train on one GPU or on all of them, whichever this machine runs faster.

Whether N GPUs beat one for this small recurrent model is not a given: each step is split
into N shares of the batch, the gradients are all-reduced, and Keras's multi-step loop is
unavailable under a MirroredStrategy (one step per call into the graph). So at the start of
a run the trainer times real training steps - the run's own model, loss, optimizer, batch
size and data - on one GPU and on all visible GPUs, and keeps the faster:

- bounded: at most `MAX_STEPS` timed steps or `MAX_SECONDS` per device count, after
  `WARM_CALLS` untimed calls that trace and warm up (about 30 s in all on a GPU box);
- free where there is nothing to choose: without a GPU the CPU trains, with one GPU it
  does; nothing is timed;
- resumable: the figures and the choice are written to model_info.json ("run" ->
  "devices"), and a resumed run reuses them instead of timing again;
- forced by a number: `train.gpus: N` / `--gpus N` (0 = all) skips all of this.

A count N is only a candidate when the global batch splits evenly over it
(trainer/data.py); otherwise the largest count below N that does is timed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import keras
import numpy as np

MAX_STEPS = 200
MAX_SECONDS = 8.0
WARM_CALLS = 2


@dataclasses.dataclass
class Timing:
    samples_per_s: float
    steps: int  # timed steps
    seconds: float  # timed seconds


@dataclasses.dataclass
class Choice:
    devices: list[str]
    reason: str
    visible: int
    timings: dict[int, Timing] = dataclasses.field(default_factory=dict)  # device count -> timing
    seconds: float = 0.0  # what the measurement cost, tracing included
    reused: bool = False

    def record(self) -> dict:
        """What model_info.json keeps under run -> devices (JSON keys are strings)."""
        return {"setting": "auto", "visible": self.visible, "chosen": len(self.devices), "devices": self.devices,
                "samples_per_s": {str(k): round(t.samples_per_s, 1) for k, t in self.timings.items()},
                "timed_steps": {str(k): t.steps for k, t in self.timings.items()},
                "timed_seconds": {str(k): round(t.seconds, 2) for k, t in self.timings.items()},
                "seconds": round(self.seconds, 1), "reason": self.reason}


def candidate_counts(visible: int, batch_size: int) -> list[int]:
    """[1, n]: n the largest count <= visible that splits the batch evenly (none: [1])."""
    many = next((n for n in range(visible, 1, -1) if batch_size % n == 0), None)
    return [1] if many is None else [1, many]


def device_word(devices: list[str], n: int) -> str:
    kind = "GPU" if any("GPU" in d.upper() for d in devices) else "device"
    return f"{n} {kind}{'s' if n != 1 else ''}"


def choose(visible: list[str], batch_size: int, time_devices: Callable[[list[str]], Timing],
           recorded: dict | None = None) -> Choice:
    """Time `time_devices` on each candidate device list and keep the fastest, or reuse
    `recorded` (a Choice.record() of the same machine, from the run being resumed)."""
    reused = _reuse(recorded, visible)
    if reused is not None:
        return reused
    counts = candidate_counts(len(visible), batch_size)
    if len(counts) == 1:
        return Choice(visible[:1], f"train.gpus auto: {device_word(visible, 1)} (the global batch {batch_size} "
                                   f"does not split evenly over 2..{len(visible)} GPUs)", len(visible))
    started = time.perf_counter()
    timings = {n: time_devices(visible[:n]) for n in counts}
    keras.backend.clear_session()  # drop the timed models (and Keras's name counters, dtype policy)
    best = max(counts, key=lambda n: timings[n].samples_per_s)
    choice = Choice(visible[:best], "", len(visible), timings, time.perf_counter() - started)
    choice.reason = _reason(choice)
    return choice


def _reason(choice: Choice, reused: bool = False) -> str:
    words = [f"{device_word(choice.devices, n)} {t.samples_per_s:,.0f} samples/s ({t.steps} steps)"
             for n, t in sorted(choice.timings.items())]
    n = len(choice.devices)
    rates = sorted((t.samples_per_s for t in choice.timings.values()), reverse=True)
    lead = f", {rates[0] / rates[1]:.2f}x" if len(rates) > 1 and rates[1] > 0 else ""
    when = "measured when the run started" if reused else f"measured in {choice.seconds:.0f} s of real training steps"
    return f"train.gpus auto: {device_word(choice.devices, n)} ({when}: {', '.join(words)}; the faster{lead})"


def _reuse(recorded: dict | None, visible: list[str]) -> Choice | None:
    if not recorded or recorded.get("setting") != "auto" or recorded.get("visible") != len(visible):
        return None
    try:
        timings = {int(k): Timing(float(v), int(recorded.get("timed_steps", {}).get(k, 0)), 0.0)
                   for k, v in recorded.get("samples_per_s", {}).items()}
        chosen = int(recorded["chosen"])
    except (KeyError, TypeError, ValueError):
        return None  # a damaged record: measure again
    if not 1 <= chosen <= len(visible):
        return None
    choice = Choice(visible[:chosen], "", len(visible), timings, 0.0, reused=True)
    choice.reason = (_reason(choice, reused=True) if timings else recorded.get("reason", "")
                     or f"train.gpus auto: {device_word(visible, chosen)} (as the run started)")
    return choice


class StepClock(keras.callbacks.Callback):
    """Starts timing after `warm_calls` calls into the graph (tracing, warm-up) and stops
    fit at `max_steps` timed steps or `max_seconds`, whichever comes first."""

    def __init__(self, warm_calls: int, max_steps: int, max_seconds: float):
        super().__init__()
        self.warm_calls, self.max_steps, self.max_seconds = warm_calls, max_steps, max_seconds
        self.calls = 0
        self.start: tuple[float, int] | None = None
        self.end: tuple[float, int] | None = None

    def on_train_batch_end(self, batch, logs=None):
        for v in (logs or {}).values():  # the step's results are back: the devices are done
            np.asarray(v)
        now, step = time.perf_counter(), batch + 1
        self.calls += 1
        if self.start is None:
            if self.calls >= self.warm_calls:
                self.start = (now, step)
            return
        self.end = (now, step)
        if step - self.start[1] >= self.max_steps or now - self.start[0] >= self.max_seconds:
            self.model.stop_training = True


def time_training(model, make_dataset: Callable[[int], object], steps_per_epoch: int, batch_size: int,
                  steps_per_call: int, class_weight=None, max_steps: int | None = None,
                  max_seconds: float | None = None) -> Timing:
    """Samples/s of `model.fit` (compiled with `steps_per_call`) on the batches `make_dataset(epochs)` gives."""
    max_steps = MAX_STEPS if max_steps is None else max_steps
    max_seconds = MAX_SECONDS if max_seconds is None else max_seconds
    total = WARM_CALLS * steps_per_call + math.ceil(max_steps / steps_per_call) * steps_per_call
    clock = StepClock(WARM_CALLS, max_steps, max_seconds)
    dataset = make_dataset(math.ceil(total / steps_per_epoch))
    model.fit(dataset, epochs=1, steps_per_epoch=total, class_weight=class_weight, verbose=0, shuffle=False,
              callbacks=[clock])
    if clock.start is None or clock.end is None or clock.end[1] == clock.start[1]:
        raise RuntimeError("train.gpus auto: too few steps to time")
    steps = clock.end[1] - clock.start[1]
    seconds = clock.end[0] - clock.start[0]
    return Timing(steps * batch_size / seconds, steps, seconds)
