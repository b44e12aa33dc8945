"""Commands that use an exported bundle: `calibrate`, `score`, `margins`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from volmargin.cli.arguments import check_known_keys, show_progress
from volmargin.cli.common import check_tracking, load_data

from volmargin.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a Ctrl-C while pandas loads is then one line, not a traceback
    import pandas as pd


def cmd_calibrate(args: argparse.Namespace) -> int:
    from volmargin.batch import score_panel
    from volmargin.calibration import PolicyConfig
    from volmargin.calibration.bundle import calibrate_bundle, check_calibration_data
    from volmargin.calibration.parameters import write_parameter_set
    from volmargin.distributed import check_options, executor
    from volmargin.evaluation.scoring import POOLED
    from volmargin.io import output_lock, preflight

    check_options(args.scheduler, args.workers)
    check_known_keys("--policy", args.policy, [f.name for f in dataclasses.fields(PolicyConfig)])
    try:
        policy = PolicyConfig(**args.policy)
    except TypeError as exc:
        raise ConfigError(f"--policy: {exc}") from None
    preflight(args.out, suffixes=(".json",))
    with output_lock(args.out):  # a second writer of this output stops at once
        if not args.no_tracking:
            manifest = _bundle_manifest(args.bundle)
            check_tracking(args.tracking_uri, manifest.get("mlflow", {}).get("tracking_uri"))
        bars, panel = _bundle_data(args)
        check_calibration_data(args.bundle, panel)
        with executor(args.scheduler, args.workers) as runner:
            scored = score_panel(args.bundle, panel, runner, progress=False)
        parameters, table, summary = calibrate_bundle(args.bundle, scored, panel, policy, args.validation_start, bars)
        path = write_parameter_set(parameters, args.bundle, args.out)
        pooled = summary[summary["asset"] == POOLED].set_index("side")
        print(f"calibrated {policy.risk} x scale per asset and side to a {policy.target_breach_rate:.1%} breach "
              f"target; validation from {table['valid_from'].iloc[0].date()}:")
        for side, row in pooled.iterrows():
            print(f"  {side:>5}: breach rate {row['breach_rate']:.2%} over {int(row['days'])} days, "
                  f"average initial margin {row['avg_margin']:.2%}, Basel zone {row['basel_zone']}")
        infeasible = [f"{r['asset']}/{r['side']}" for r in parameters["records"] if not r["feasible"]]
        if infeasible:
            print(f"  target infeasible (flagged in the set, see 'reason'): {', '.join(infeasible)}")
        print(f"wrote {path}")
        if not args.no_tracking:
            import mlflow

            from volmargin.tracking import log_calibration_set, resolve_tracking_uri, start_experiment

            logged = _bundle_manifest(args.bundle).get("mlflow", {})
            mlflow.set_experiment(experiment_id=start_experiment(
                resolve_tracking_uri(args.tracking_uri, logged.get("tracking_uri")), "volmargin"))
            log_calibration_set(path, logged.get("run_id"))
        return 0


def _bundle_manifest(bundle: Path) -> dict:
    """The bundle's verified manifest (a BundleError names what is wrong)."""
    from volmargin_serving.bundle import read_manifest

    manifest = read_manifest(bundle)
    return manifest if isinstance(manifest.get("mlflow"), dict) else {**manifest, "mlflow": {}}


def cmd_score(args: argparse.Namespace) -> int:
    from volmargin.batch import score_panel
    from volmargin.distributed import check_options, executor
    from volmargin.io import TABLE_SUFFIXES, output_lock, preflight, write_frame

    check_options(args.scheduler, args.workers)
    preflight(args.out, suffixes=TABLE_SUFFIXES)
    with output_lock(args.out):  # a second writer of this output stops at once
        began = time.perf_counter()
        _, panel = _bundle_data(args)
        with executor(args.scheduler, args.workers) as runner:
            scored = score_panel(args.bundle, panel, runner, latest=args.latest, progress=show_progress(args))
        write_frame(scored, args.out)
        flagged = int((scored["doubt"] != "").sum())
        print(f"scored {scored['asset'].nunique()} assets, {len(scored)} forecasts in "
              f"{time.perf_counter() - began:.1f} s "
              f"({flagged} on a window a margin service would flag as doubtful: column `doubt`); wrote {args.out}")
        _print_uncovered(panel, scored, args.bundle, "forecast")
        return 0


def _bundle_data(args: argparse.Namespace) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The bars of `--data` for `--bundle` and their daily measures, with the `--iv` index where the bundle
    reads one."""
    from volmargin_serving.features import IV_FEATURE_NAMES

    from volmargin.evaluation.backtest import daily_panel
    from volmargin.training import with_iv_index

    bars = _bars_for_bundle(args.bundle, args.data)
    panel = daily_panel(bars, args.min_bars)
    if IV_FEATURE_NAMES[0] not in _bundle_manifest(args.bundle).get("features", {}).get("names", ()):
        return bars, panel
    if not args.iv:
        print(f"{args.bundle} reads an implied-volatility index; without --iv every asset is read as having none")
    return bars, with_iv_index(panel, dict(args.iv), "--iv")


def _bars_for_bundle(bundle: Path, data: list[str]) -> dict[str, pd.DataFrame]:
    """The `--data` bars at the interval `bundle` learned from (finer bars aggregated to it, said in a line)."""
    from volmargin_serving.bars import interval_text

    from volmargin.batch import bars_as_learned
    from volmargin.data.loader import bar_seconds

    if not data:  # the synthetic market only stands in for the bars of a bundle that learned from it
        _refuse_real(bundle)
    training = _bundle_manifest(bundle).get("training", {})
    bars = bars_as_learned(bundle, load_data(data, training.get("data_sha256"), str(bundle)))
    aggregated = {a: f.attrs["aggregated_from"] for a, f in bars.items() if "aggregated_from" in f.attrs}
    if aggregated:
        intervals = ", ".join(sorted({interval_text(s) for s in aggregated.values()}))
        target = interval_text(bar_seconds(bars[next(iter(aggregated))]))
        print(f"{len(aggregated)} asset(s) of {intervals} bars aggregated to the {target} bars the bundle learned from")
    return bars


def _refuse_real(bundle: Path) -> None:
    """ConfigError where `bundle` learned from real bars: the synthetic market cannot stand in for them."""
    learned = sorted(_bundle_manifest(bundle).get("training", {}).get("assets", {}))
    real = [a for a in learned if not a.startswith("syn_")]
    if real:
        raise ConfigError(f"--data: give the bars to read; {bundle} learned from real bars ({len(learned)} assets: "
                          f"{', '.join(real[:3])}{' ...' * (len(real) > 3)}), not the built-in synthetic market")


def _print_uncovered(panel: dict, table: pd.DataFrame, bundle: Path, what: str) -> None:
    """A line naming the assets of `panel` that got no row for too little history for the bundle's window, and
    one for the others (a `--start` after their last day)."""
    from volmargin_serving import load

    history = load(bundle).history_days
    missing = sorted(set(panel) - set(table["asset"]))
    short = [a for a in missing if len(panel[a]) < history]
    for names, why in ((short, f"with less history than {bundle} needs"), (sorted(set(missing) - set(short)),
                                                                            "with no day from --start")):
        if names:
            print(f"no {what} for {len(names)} asset(s) {why}: {', '.join(names[:10])}{' ...' * (len(names) > 10)}")


def cmd_margins(args: argparse.Namespace) -> int:
    from volmargin_serving.calibration import calibration_beside

    from volmargin.batch import serve_panel
    from volmargin.distributed import check_options, executor
    from volmargin.io import TABLE_SUFFIXES, output_lock, preflight, write_frame

    check_options(args.scheduler, args.workers)
    preflight(args.out, suffixes=TABLE_SUFFIXES)
    with output_lock(args.out):  # a second writer of this output stops at once
        _bundle_manifest(args.bundle)  # a mistyped bundle is named before its calibration set
        calibration = args.calibration or calibration_beside(args.bundle)
        if calibration.is_dir():
            raise ConfigError(f"--calibration: {calibration} is a folder; give the calibration set's .json file")
        if not calibration.is_file():
            raise ConfigError(f"--calibration: no calibration set at {calibration} (run `volmargin calibrate --out "
                              f"{calibration}` first, or give the set's file with --calibration FILE)")
        began = time.perf_counter()
        _, panel = _bundle_data(args)
        with executor(args.scheduler, args.workers) as runner:
            served = serve_panel(args.bundle, calibration, panel, runner, latest=args.latest, start=args.start,
                                 progress=show_progress(args))
        write_frame(served, args.out)
        safe = served["fail_safe"]
        days = served["origin"].nunique()
        print(f"margins of {served['asset'].nunique()} assets on {days} day{'s' * (days != 1)} from "
              f"{served['origin'].min():%Y-%m-%d} in {time.perf_counter() - began:.1f} s; {int(safe.sum())} of "
              f"{len(served)} "
              f"fail-safe (column `reason`); wrote {args.out}")
        if args.start is None and not args.latest:
            print("  (from the day before the calibration set's parameters come into force; --start DATE to change)")
        _print_replay_note(served, calibration)
        _print_fail_safe_causes(served, calibration)
        _print_uncovered(panel, served, args.bundle, "margin")
        for side, rows in served[~safe].groupby("side"):
            print(f"  {side:>5}, not fail-safe: average initial margin {rows['initial_margin'].mean():.2%}, "
                  f"maintenance {rows['maintenance_margin'].mean():.2%}")
        return 0


def _print_replay_note(served: pd.DataFrame, calibration: Path) -> None:
    """A line where days before the set's as_of are replayed: they are priced with the set as it stands at its
    as_of (its APC floors and published margins may know later moves), not with the set a service held then."""
    import pandas as pd

    as_of = pd.Timestamp(json.loads(calibration.read_text())["parameters"]["as_of"])
    earlier = served["origin"] < as_of
    if earlier.any():
        print(f"  {earlier.sum() // 2:,} asset-days before the set's as_of {as_of:%Y-%m-%d} are priced with the set as "
              "of then (its floors may know later moves); the walk-forward path without look-ahead is the run's "
              "calibration/margin_paths.parquet")


def _print_fail_safe_causes(served: pd.DataFrame, calibration: Path) -> None:
    """Lines for the two fail-safe causes a user fixes in the call: days before the set is in force, and assets
    the set does not cover (named after their files)."""
    early = served["reason"].str.contains("no parameters in force", regex=False)
    if early.any():
        print(f"  {int(early.sum())} of them before the calibration set's parameters are in force")
    unknown = sorted(served.loc[served["reason"].str.startswith("not in the calibration set"), "asset"].unique())
    if unknown:
        covered = sorted({r["asset"] for r in json.loads(calibration.read_text())["parameters"]["records"]})
        print(f"  {len(unknown)} asset(s) not in the calibration set, fully collateralised: {', '.join(unknown[:10])}"
              f"{' ...' * (len(unknown) > 10)}; the set covers {len(covered)}: {', '.join(covered[:10])}"
              f"{' ...' * (len(covered) > 10)} (an asset is named after its file: binance_btcusdt_1h.csv.gz -> "
              "binance_btcusdt)")
