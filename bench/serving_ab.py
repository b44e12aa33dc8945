"""One-asset incremental update of this checkout against another checkout's, in one process.

    python bench/serving_ab.py BUNDLE --baseline ../main/serving [--rounds 30] [--block 200]

The baseline's `volmargin_serving/stream.py` and `outputs.py` are loaded under other module names (the
rest, runtime included, is this checkout's), both states start from the bundle's golden asset and fold in
its rows in turn, each dated the day after the last. The two updates and the graph alone on one fixed
window (`run_model`) run `block` calls each in turn, `rounds` times, on the thread's CPU clock: on a
shared machine, load swings hit all three alike, which separate runs of bench/serving.py cannot promise.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import volmargin_serving as vs

CLOCK = time.thread_time_ns


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout's serving/ folder")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=200)
    args = parser.parse_args()

    package = args.baseline / "volmargin_serving"
    outputs = _load("baseline_outputs", package / "outputs.py")
    stream = _load("baseline_stream", package / "stream.py")
    stream.postprocess_one = outputs.postprocess_one
    runtime = vs.load(args.bundle)
    golden = np.load(args.bundle / "golden.npz")
    inputs, dates = golden["inputs"][0], golden["dates"][0]
    states = {"baseline": stream.AssetState(runtime, inputs, dates, dates[-1]),
              "this checkout": runtime.stream(inputs, dates, as_of=dates[-1])}
    window = states["this checkout"]._features[None, 1:1 + runtime.window].copy()
    folded = dict.fromkeys(states, 0)

    def update(name: str) -> None:
        state = states[name]
        day = np.datetime64(state.day + 1, "D")
        state.update(inputs[folded[name] % len(inputs)], day, as_of=day)
        folded[name] += 1

    calls = {name: (lambda name=name: update(name)) for name in states}
    calls["graph alone, one fixed window"] = lambda: runtime.run_model(window)
    for name in states:  # warm-up
        for _ in range(1000):
            update(name)
    times = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            for _ in range(args.block):
                began = CLOCK()
                call()
                times[name].append(CLOCK() - began)
    print(f"bundle {args.bundle} ({runtime.manifest['model']['kind']}), baseline {args.baseline}, CPU clock, "
          f"{args.rounds} rounds of {args.block} calls each")
    p50 = {name: np.percentile(np.array(spent) / 1e3, 50) for name, spent in times.items()}
    for name, spent in times.items():
        print(f"  {name:<30}  p50 {p50[name]:6.1f} us  p99 {np.percentile(np.array(spent) / 1e3, 99):6.1f} us")
    graph = p50["graph alone, one fixed window"]
    print("  update p50 over the graph's: " + ", ".join(f"{name} {p50[name] / graph:.2f}x" for name in states))


if __name__ == "__main__":
    main()
