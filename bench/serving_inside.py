"""Why the model costs more inside a one-asset incremental update than on one fixed window.

    python bench/serving_inside.py BUNDLE [--rounds 40] [--block 200]

The model graph is called as the update calls it (bound to fixed buffers by ONNX Runtime's IO binding:
no input or output conversion) in four settings, then the update itself:
- one fixed window, back to back (what `bench/serving.py` calls "the graph alone", less the conversions);
- cycling through 1,000 of the update's own windows (consecutive days of the golden asset): new inputs
  take other paths through the trees (branch predictors, caches);
- the fixed window, each call after one update's Python work (the update with its model call left out):
  that work evicts the graph's data and code from the caches, and the graph evicts the update's;
- cycling windows after the Python work: both at once, as inside an update;
- the model timed inside the update, the update without its model call (its Python alone), and the whole
  update: whole minus Python is what the model adds to an update.
Each setting runs `block` calls in turn with the others, `rounds` times, on the thread's CPU clock, so
load swings on a shared machine hit all settings alike.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import volmargin_serving as vs

CLOCK = time.thread_time_ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block", type=int, default=200)
    args = parser.parse_args()

    runtime = vs.load(args.bundle)
    golden = np.load(args.bundle / "golden.npz")
    inputs, dates = golden["inputs"][0], golden["dates"][0]
    state = runtime.stream(inputs, dates, as_of=dates[-1])
    update = _next_day(state, inputs)
    window = runtime.window
    windows = []
    for _ in range(1000):
        update()
        slot = state.day % window
        windows.append(state._features[slot + 1:slot + 1 + window].copy())
    buffer = np.zeros((1, window, len(runtime.mean)), np.float32)
    run = runtime.bind_model([buffer], np.zeros((1, 1 + 4 * len(runtime.levels)), np.float32))[0]
    model, skipped, inside = state._model, [lambda: None] * window, []

    def python_work() -> None:  # one update without its model call
        state._model = skipped
        update()
        state._model = model

    settings = ("fixed window", "cycling windows", "fixed window after the update's Python",
                "cycling windows after the update's Python")
    times: dict[str, list[int]] = {name: [] for name in (*settings, "update without its model call", "whole update")}
    calls = 0
    for _ in range(args.rounds):
        for name in settings:
            for _ in range(args.block):
                calls += 1
                buffer[0] = windows[calls % len(windows)] if name.startswith("cycling") else windows[0]
                if name.endswith("Python"):
                    python_work()
                began = CLOCK()
                run()
                times[name].append(CLOCK() - began)
        state._model = [_timed(run_slot, inside) for run_slot in model]
        for _ in range(args.block):
            update()
        state._model = model
        for _ in range(args.block):
            began = CLOCK()
            python_work()
            times["update without its model call"].append(CLOCK() - began)
        for _ in range(args.block):
            began = CLOCK()
            update()
            times["whole update"].append(CLOCK() - began)
    print(f"bundle {args.bundle} ({runtime.manifest['model']['kind']}, window {window}), one intra-op thread, "
          f"CPU clock, {args.rounds} rounds of {args.block} calls per setting")
    rows = [(f"bound graph, {name}", times[name]) for name in settings]
    rows += [("bound graph, timed inside the update", inside),
             *((name, times[name]) for name in ("update without its model call", "whole update"))]
    width = max(len(label) for label, _ in rows)
    for label, spent in rows:
        p50, p99 = np.percentile(np.array(spent) / 1e3, [50, 99])
        print(f"  {label:<{width}}  p50 {p50:6.1f} us  p99 {p99:6.1f} us")


def _timed(run, spent: list[int]):
    def call() -> None:
        began = CLOCK()
        run()
        spent.append(CLOCK() - began)
    return call


def _next_day(state, rows: np.ndarray):
    """One update per call: `rows` in turn, each dated the day after the last (as bench/serving.py)."""
    count = iter(range(1 << 62))

    def call():
        day = np.datetime64(state.day + 1, "D")
        return state.update(rows[next(count) % len(rows)], day, as_of=day)
    return call


if __name__ == "__main__":
    main()
