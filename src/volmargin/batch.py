"""Batch scoring: every asset and date of a bar panel through a bundle's ONNX graph, split by asset.

The work per asset is `volmargin_serving.Runtime.forecast_history`, the code a margin service runs,
so a scored table is exactly what the service would have said on each day. Tasks receive the bundle as
bytes (a few hundred kB), so Dask workers need no access to the bundle folder.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from volmargin_serving.bars import aggregate_bars, interval_text, learned_interval

from volmargin.data.loader import COLUMNS as OHLCV, bar_seconds
from volmargin.distributed import Executor, InProcess
from volmargin.errors import DataError
from volmargin.features.learned import INPUT_COLUMNS, daily_inputs, index_of


def bundle_files(bundle: str | Path) -> dict[str, bytes]:
    """The bundle folder's files as bytes (verified when a task loads them); a symbolic manifest is refused
    as the runtime refuses it (skipped, it was an internal KeyError)."""
    from volmargin_serving.bundle import read_manifest

    read_manifest(Path(bundle))
    return {p.name: p.read_bytes() for p in sorted(Path(bundle).iterdir()) if p.is_file() and not p.is_symlink()}


@functools.lru_cache(maxsize=4)
def _runtime(key: str, files: tuple[tuple[str, bytes], ...], calibration: bytes | None = None):
    """One verified runtime per bundle (and calibration set) per process (a worker scores many assets)."""
    from volmargin_serving import load

    # the runtime holds everything in memory once loaded, so the copy is removed at once (no /tmp litter)
    with tempfile.TemporaryDirectory(prefix=f"volmargin-bundle-{key[:12]}-") as folder, \
            tempfile.TemporaryDirectory(prefix="volmargin-calibration-") as beside:
        for name, data in files:
            (Path(folder) / name).write_bytes(data)
        if calibration is None:
            return load(folder)
        (Path(beside) / "calibration.json").write_bytes(calibration)  # outside the bundle: it holds only its files
        return load(folder, calibration=Path(beside) / "calibration.json")


def runtime_from_files(files: dict[str, bytes], calibration: bytes | None = None):
    key = hashlib.sha256(files["manifest.json"]).hexdigest()
    return _runtime(key, tuple(sorted(files.items())), calibration)


def serving_arrays(daily: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One asset's daily measures as the serving runtime takes them: (days, INPUT_COLUMNS) floats and
    datetime64[D] dates."""
    columns = daily_inputs(daily)
    return (np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS]),
            daily.index.tz_convert(None).to_numpy().astype("datetime64[D]"))


def score_asset(files: dict[str, bytes], asset: str, daily: pd.DataFrame, latest: bool = False) -> pd.DataFrame:
    """Forecasts at every origin of one asset with enough history (or only the newest one), each with
    the doubt a margin service would have flagged on its window ('' where none)."""
    runtime = runtime_from_files(files)
    if len(daily) < runtime.history_days:
        return pd.DataFrame()
    daily = daily.iloc[-runtime.history_days:] if latest else daily
    inputs, dates = serving_arrays(daily)
    forecasts = runtime.forecast_history(inputs, dates, iv=index_of(daily))
    frame = pd.DataFrame(forecasts.columns())
    frame["doubt"] = runtime.history_doubts(inputs, dates)
    frame.insert(0, "horizon", forecasts.horizon)
    frame.insert(0, "origin", daily.index[runtime.history_days - 1:])
    frame.insert(0, "asset", asset)
    return frame


def serve_asset(files: dict[str, bytes], calibration: bytes, asset: str, daily: pd.DataFrame,
                latest: bool = False, start: pd.Timestamp | None = None) -> pd.DataFrame:
    """The margins a service running the bundle with `calibration` would have published for one asset on
    each day from `start` with enough history (or the newest only, whatever the history: a listing younger
    than the bundle's window is priced fail safe, as a service would price it), each priced as of the next day
    from the rows known then, with the day before's margins as `previous` (the policy's buffer and speed limits
    carry over; the first day is a first margin): one row per origin and side, fail-safe flags and reasons."""
    runtime = runtime_from_files(files, calibration).with_fresh_memory()  # the replay's own memory only
    n = runtime.history_days
    first = max(len(daily) - 1 if latest else n - 1, 0 if start is None else int(daily.index.searchsorted(start)))
    if first >= len(daily):
        return pd.DataFrame()
    inputs, dates = serving_arrays(daily)
    iv = index_of(daily)
    rows, previous = [], None
    for end in range(first, len(daily)):
        window = slice(max(end - n + 1, 0), end + 1)
        served = runtime.margins([asset], inputs[None, window], dates[None, window], as_of=dates[end] + 1,
                                 previous=previous, iv=None if iv is None else [iv[window]])
        previous = served.initial
        rows += [{"origin": daily.index[end], **row} for row in served.rows()]
    return pd.DataFrame(rows)


def bars_as_learned(bundle: str | Path, bars: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each asset's bars at the interval the bundle learned from: finer bars that divide it aggregated to it
    by the runtime's own `volmargin_serving.bars.aggregate_bars` (5-minute bars scored as the hourly bars they
    make), others as given (`check_bars_alike` refuses coarser ones)."""
    from volmargin_serving.bundle import learned_bar_seconds, read_manifest

    learned = learned_bar_seconds(read_manifest(Path(bundle)))
    out = {}
    for asset, frame in bars.items():
        seconds = bar_seconds(frame)
        target = learned_interval(learned, seconds)
        out[asset] = frame if target is None or target == seconds else _aggregated(frame, target)
    return out


def _aggregated(frame: pd.DataFrame, seconds: int) -> pd.DataFrame:
    stamps, *columns = aggregate_bars(frame.index.as_unit("ns").asi8, *(frame[c].to_numpy() for c in OHLCV),
                                      seconds=seconds, bar_seconds=bar_seconds(frame))  # the loader's, not re-inferred
    out = pd.DataFrame(dict(zip(OHLCV, columns)),
                       index=pd.DatetimeIndex(stamps, name=frame.index.name).tz_localize("UTC"))
    out.attrs = {**frame.attrs, "freq": pd.Timedelta(seconds=seconds), "aggregated_from": bar_seconds(frame)}
    return out


def check_bars_alike(manifest: dict, panel: dict[str, pd.DataFrame]) -> None:
    """DataError naming the first asset whose daily measures come from bars of another interval than the
    bundle's training bars (`training.bar_seconds`, recorded since session 23; `bars_as_learned` aggregates
    finer ones first): a day's realized measures sum its bars' returns, and on 4-hour bars of the six
    perpetuals the GBM config's bundle forecast 18% less variance than HAR (median), the dangerous direction
    for a margin. Bundles without the record pass."""
    from volmargin_serving.bundle import learned_bar_seconds

    learned = learned_bar_seconds(manifest)
    if not learned:
        return
    for asset, daily in panel.items():
        seconds = daily.attrs.get("bar_seconds")
        if seconds is not None and seconds not in learned:
            learned_bars = " or ".join(f"{interval_text(s)} bars" for s in learned)
            raise DataError(f"{asset}: {interval_text(seconds)} bars, but the bundle learned from {learned_bars} (a "
                            f"day's realized measures sum its bars' returns): give {learned_bars}, or finer bars "
                            "that divide them")


def serve_panel(bundle: str | Path, calibration: str | Path, panel: dict[str, pd.DataFrame],
                executor: Executor | None = None, latest: bool = False, start: pd.Timestamp | None = None,
                progress: bool = True) -> pd.DataFrame:
    """`serve_asset` for every asset of `panel`, one table in asset order; by default from the day before
    the calibration set's parameters come into force (earlier days would all be fail safe, and chained by
    `previous` their fail-safe margins only ratchet up)."""
    executor = executor or InProcess()
    from volmargin_serving import load

    runtime = load(bundle, calibration=calibration)  # verify here first: fails once
    check_bars_alike(runtime.manifest, panel)
    in_force = pd.Timestamp(runtime.calibration.first_in_force).tz_localize("UTC")
    given = start
    if start is None and not latest:
        start = in_force.ceil("D") - pd.Timedelta(days=1)  # an origin is priced as of the next day
    files, document = bundle_files(bundle), Path(calibration).read_bytes()
    assets = sorted(panel)
    shipped = executor.scatter({**{a: panel[a] for a in assets}, "__bundle__": files, "__calibration__": document})
    n = len(assets)
    frames = executor.map(serve_asset, [shipped["__bundle__"]] * n, [shipped["__calibration__"]] * n, assets,
                          [shipped[a] for a in assets], [latest] * n, [start] * n, desc="margins", unit="asset",
                          progress=progress)
    frames = [f for f in frames if not f.empty]
    last = max((panel[a].index[-1] for a in assets if len(panel[a])), default=None)  # a file of one day: no row
    if not frames and start is not None and last is not None and start > last:
        what = (f"--start {start.date()} is" if given is not None else
                f"the calibration set's parameters come into force on {in_force.date()},")
        raise DataError(f"{what} after the data's last day {last.date()}: no margin to serve")
    if not frames:
        raise DataError(f"no asset has the history the bundle {bundle} needs for one margin")
    return pd.concat(frames, ignore_index=True)


def score_panel(bundle: str | Path, panel: dict[str, pd.DataFrame], executor: Executor | None = None,
                latest: bool = False, progress: bool = True) -> pd.DataFrame:
    """One table of forecasts for every asset of `panel` (asset -> daily measures), in asset order."""
    executor = executor or InProcess()
    from volmargin_serving import load

    check_bars_alike(load(bundle).manifest, panel)  # verify here first: fails once, before any task is sent
    files = bundle_files(bundle)
    assets = sorted(panel)
    shipped = executor.scatter({**{a: panel[a] for a in assets}, "__bundle__": files})
    frames = executor.map(score_asset, [shipped["__bundle__"]] * len(assets), assets, [shipped[a] for a in assets],
                          [latest] * len(assets), desc="score", unit="asset", progress=progress)
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise DataError(f"no asset has the history the bundle {bundle} needs for one forecast")
    return pd.concat(frames, ignore_index=True)
