"""`volmargin backtest` in one process against `--workers N`, on the hourly spot files of ../shared/data.

Run: .venv/bin/python bench/dask_scaleout.py [--assets 129] [--start 2023-01-01] [--workers 2]

The 129 assets are the 29 top-level hourly spot files (28 Binance pairs and Bitstamp BTC/USD, no
perpetuals) and the 100 of alts/. Each run is a fresh `volmargin backtest` process, timed from start to
exit: wall seconds, and CPU seconds of the whole process tree (driver, Dask scheduler, nannies and
workers, from the kernel's accounting of reaped children), so that a run slowed by other jobs on a
shared machine can be told from one that wastes work. CPU / wall is the number of cores a run kept
busy on average. On a machine shared with other jobs the wall times depend on their load (Linux's
autogroup scheduling splits the CPU between sessions, so a run gets the same share with one process as
with three); the CPU critical path (driver CPU seconds + the busiest worker's) is what the run would
take on otherwise idle cores. The forecasts of the two runs must be identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

from common import REPO, hourly_spot_files, shared_data_dir


def backtest_files(count: int) -> list[Path]:
    """The first `count` of: top-level hourly spot files, then alts/ (both sorted by name)."""
    files = hourly_spot_files() + sorted((shared_data_dir() / "alts").glob("*_1h.csv.gz"))
    return files[:count]


def timed_run(argv: list[str], log: Path) -> dict:
    """Wall and CPU seconds (user + system) of one command: all its processes together, and the driver
    process and the busiest other process (a Dask worker) apart, sampled every half second."""
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    seen: dict[int, float] = {}  # pid -> CPU seconds when last sampled
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        driver = psutil.Process(process.pid)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            seen.update(_cpu_seconds([driver, *driver.children(recursive=True)]))
            time.sleep(0.5)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv[:2])} ... failed, see {log}")
    cpu = usage.ru_utime + usage.ru_stime
    others = [seconds for p, seconds in seen.items() if p != process.pid]
    return {"wall_s": wall, "cpu_s": cpu, "cores_busy": cpu / wall, "driver_cpu_s": seen.get(process.pid, cpu),
            "busiest_worker_cpu_s": max(others, default=0.0), "load_before": load_before,
            "load_after": os.getloadavg()[0]}


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    found = {}
    for process in processes:
        try:
            times = process.cpu_times()
            found[process.pid] = times.user + times.system
        except psutil.Error:  # exited between listing and reading
            pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=129, help="how many files (default all 129)")
    parser.add_argument("--start", default="2023-01-01", help="first target date (default 2023-01-01)")
    parser.add_argument("--models", default="hist,ewma,garch,gjr,har,fhs")
    parser.add_argument("--refit-every", default="20")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "scaleout")
    args = parser.parse_args()

    files = backtest_files(args.assets)
    common = [str(Path(sys.executable).with_name("volmargin")), "backtest", "--data", *map(str, files), "--start", args.start,
              "--models", args.models, "--refit-every", args.refit_every, "--quiet", "--no-tracking"]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(files)} files, targets from {args.start}, models {args.models}, refit every {args.refit_every} days; "
          f"{os.cpu_count()} cores")
    runs = {}
    for label, extra in (("one process", []), (f"--workers {args.workers}", ["--workers", str(args.workers)])):
        folder = args.out / label.replace(" ", "").replace("-", "")
        runs[label] = timed_run([*common, "--out", str(folder), *extra], args.out / f"{folder.name}.log")
        runs[label]["folder"] = folder
        print(f"{label}: {runs[label]['wall_s']:.1f} s wall, {runs[label]['cpu_s']:.1f} s CPU", flush=True)
    one, many = runs.values()
    pd.testing.assert_frame_equal(pd.read_parquet(many["folder"] / "forecasts.parquet"),
                                  pd.read_parquet(one["folder"] / "forecasts.parquet"), check_exact=True)
    table = pd.DataFrame(runs).T.drop(columns="folder")
    print(table.astype(float).round(2).to_string())
    # On idle cores the run would take about its driver's CPU time plus its busiest worker's (the driver's
    # own work, loading and scoring, comes before and after the tasks; its scheduling is counted as serial)
    critical = many["driver_cpu_s"] + many["busiest_worker_cpu_s"]
    print(f"forecasts identical; speed-up {one['wall_s'] / many['wall_s']:.2f}x wall; "
          f"{many['cpu_s'] / one['cpu_s']:.2f}x the CPU seconds of one process; CPU critical path "
          f"{critical:.1f} s (driver + busiest worker): {one['cpu_s'] / critical:.2f}x on otherwise idle cores")


if __name__ == "__main__":
    main()
