"""Scale-out on Dask: same results as the single-process run, loopback only, clear errors."""

import dataclasses
import sys
import tempfile
import threading
import time
import warnings

import cloudpickle
import pandas as pd
import psutil
import pytest
from threadpoolctl import threadpool_info

from volmargin.cli import main
from volmargin.data import synthetic_market, write_synthetic_csv
from volmargin import distributed
from volmargin.distributed import InProcess, executor
from volmargin.errors import ConfigError, DataError
from volmargin.evaluation import backtest
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, default_min_bars, model_groups, run_backtest
from volmargin.evaluation.walkforward import WalkForwardSplit

# helpers defined here travel to the workers by value (workers cannot import the test module)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONFIG = BacktestConfig(models=("ewma", "har", "garch"), split=WalkForwardSplit(min_train=200, refit_every=50))
CLI_ARGS = ["--models", "ewma,har,garch", "--min-train", "200", "--refit-every", "50", "--quiet", "--no-tracking"]


def _listening(processes) -> set[tuple[str, int]]:
    found = set()
    for process in processes:
        try:
            found |= {tuple(c.laddr[:2]) for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module")
def panel():
    return daily_panel(synthetic_market(n_assets=3, days=500))


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker local cluster, and every socket it listens on (driver and worker processes)."""
    me = psutil.Process()
    before = _listening([me])
    with executor(workers=2) as ex:
        sockets = _listening([me, *me.children(recursive=True)]) - before
        yield ex, sockets


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory):
    return [str(p) for p in write_synthetic_csv(tmp_path_factory.mktemp("bars"), n_assets=2, days=500, seed=5)]


@pytest.mark.parametrize("tasks_per_slot", [4, 0.1])  # 3 assets on 2 workers: models split, or one task per asset
def test_local_cluster_backtest_is_identical_to_in_process(panel, cluster, tasks_per_slot, monkeypatch):
    blas_before = [(p["filepath"], p["num_threads"]) for p in threadpool_info()]
    expected, expected_timings = run_backtest(panel, CONFIG, progress=False)
    assert [(p["filepath"], p["num_threads"]) for p in threadpool_info()] == blas_before  # limits restored

    monkeypatch.setattr(backtest, "TASKS_PER_SLOT", tasks_per_slot)
    forecasts, timings = run_backtest(panel, CONFIG, progress=False, executor=cluster[0])
    pd.testing.assert_frame_equal(forecasts, expected, check_exact=True)
    pd.testing.assert_frame_equal(timings.drop(columns="seconds"), expected_timings.drop(columns="seconds"))
    assert set(forecasts["model"]) == {"ewma", "har", "garch"} and forecasts["asset"].nunique() == 3


def test_existing_cluster_by_address_gives_the_same_forecasts(panel, cluster):
    small = {asset: panel[asset] for asset in list(panel)[:2]}
    expected, _ = run_backtest(small, CONFIG, progress=False)
    with executor(scheduler=cluster[0].client.scheduler.address) as ex:  # as `--scheduler ADDRESS` does
        assert ex.distributed and "2 workers" in ex.description
        forecasts, _ = run_backtest(small, CONFIG, progress=False, executor=ex)
    pd.testing.assert_frame_equal(forecasts, expected, check_exact=True)


def test_tasks_are_whole_assets_when_assets_outnumber_workers():
    models = ["hist", "ewma", "garch", "gjr", "har", "fhs"]
    assert model_groups(models, assets=129, slots=2) == [tuple(models)]
    assert model_groups(models, assets=8, slots=2) == [tuple(models)]
    split = model_groups(models, assets=3, slots=2)  # 3 assets cannot keep 2 workers busy: split the models
    assert len(split) == 3 and sorted(m for group in split for m in group) == sorted(models)
    assert len(model_groups(models, assets=1, slots=16)) == 6  # never more groups than models
    assert model_groups([], assets=3, slots=2) == []


class _Recorder(InProcess):
    """Runs in this process and records the order in which tasks were handed over."""

    def __init__(self, slots: int) -> None:
        self.slots, self.order = slots, []

    def map(self, fn, *iterables, **kwargs):
        self.order = [(asset, models) for asset, _, models, _ in zip(*iterables)]
        return super().map(fn, *iterables, **kwargs)


def test_largest_tasks_go_first_and_the_table_keeps_the_panel_order(panel):
    short = {"short": panel[list(panel)[0]].iloc[-260:]}  # fewest days: least work, listed first
    mixed = {**short, **panel}
    expected, expected_timings = run_backtest(mixed, CONFIG, progress=False)
    recorder = _Recorder(slots=1)
    forecasts, timings = run_backtest(mixed, CONFIG, progress=False, executor=recorder)
    assert [asset for asset, _ in recorder.order][-1] == "short"
    assert all(len(models) == 3 for _, models in recorder.order)  # 4 assets, 1 slot: one task per asset
    pd.testing.assert_frame_equal(forecasts, expected, check_exact=True)
    assert list(timings["asset"]) == list(expected_timings["asset"]) == [a for a in mixed for _ in range(3)]


class _Beside(InProcess):
    """A cluster stand-in: says it is distributed and notes whether the global models were training while
    the per-asset tasks ran (and can fail a task)."""

    distributed = True

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.saw_global_models = fail, False

    def map(self, fn, *iterables, **kwargs):
        self.saw_global_models = any(t.name == "global-models" and t.is_alive() for t in threading.enumerate())
        if self.fail:
            raise DataError("a cluster task failed")
        return super().map(fn, *iterables, **kwargs)


def test_global_models_train_beside_the_cluster_tasks_with_the_same_results(panel):
    """Beside a cluster the global models refit in threads of their own, each its own chain: the same table."""
    gbm = {"n_estimators": 20, "tail_estimators": 10}
    nn = {"window": 8, "hidden": 8, "max_epochs": 2, "patience": 1, "refit_epochs": 1, "batch_size": 256}
    config = dataclasses.replace(CONFIG, models=("ewma", "gbm", "nn", "blend"),
                                 model_refit_every={m: 200 for m in ("gbm", "nn", "blend")},
                                 model_params={"gbm": gbm, "nn": nn, "blend": {"gbm": gbm, "nn": nn}})
    expected, expected_timings = run_backtest(panel, config, progress=False)
    beside = _Beside()
    forecasts, timings = run_backtest(panel, config, progress=False, executor=beside)
    assert beside.saw_global_models
    pd.testing.assert_frame_equal(forecasts, expected, check_exact=True)
    assert list(timings["model"]) == list(expected_timings["model"])
    with pytest.raises(DataError, match="a cluster task failed"):  # the cluster's error, not swallowed
        run_backtest(panel, config, progress=False, executor=_Beside(fail=True))
    # ... raised once the refits in flight have ended: a thread left inside torch aborts the interpreter at exit
    assert not any(t.name == "global-models" and t.is_alive() for t in threading.enumerate())


def _blas_threads(_: int) -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info()]


def test_tasks_run_with_single_threaded_math_on_workers(cluster):
    threads = cluster[0].map(_blas_threads, range(4), progress=False)
    assert all(t and set(t) == {1} for t in threads), threads


def _profiling_and_memory_checks() -> tuple:
    import dask

    return dask.config.get("distributed.worker.profile.enabled"), dask.config.get("distributed.worker.memory.monitor-interval")


def test_local_workers_skip_the_housekeeping_nobody_reads(cluster):
    settings = cluster[0].client.run(_profiling_and_memory_checks)
    assert len(settings) == 2 and set(settings.values()) == {(False, "1s")}, settings


def test_thread_pools_are_found_once_per_process_and_again_after_imports(monkeypatch):
    first = distributed._thread_pools()
    assert distributed._thread_pools() is first  # no second scan (25-45 ms) for the next task
    monkeypatch.setitem(sys.modules, "volmargin_test_new_import", sys)  # an import may load another library
    assert distributed._thread_pools() is not first


def _slow_identity(i: int, delay: float) -> int:
    time.sleep(delay)
    return i


def test_results_come_back_in_input_order(cluster):
    delays = [0.4, 0.0, 0.3, 0.0, 0.1, 0.0]  # later inputs finish first
    assert cluster[0].map(_slow_identity, range(6), delays, progress=False) == list(range(6))


def test_worker_data_error_surfaces_with_its_message(cluster):
    daily_bars = pd.DataFrame({"close": [1.0, 1.1]}, index=pd.date_range("2024-01-01", periods=2, tz="UTC"))
    daily_bars.attrs.update(freq=pd.Timedelta(days=1), source="btc_1d.csv")
    with pytest.raises(DataError, match=r"^btc_1d.csv: realized measures need intraday bars") as caught:
        cluster[0].map(default_min_bars, [daily_bars], progress=False)
    assert type(caught.value) is DataError
    assert cluster[0].map(_slow_identity, [1], [0.0], progress=False) == [1]  # the cluster still works


def _warns_as_arch_does(x):
    """A library that turns its warnings on inside its own call (arch's fit does), as a task on a worker."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a fit that did not converge")
    return x


def test_workers_print_no_library_warning_nor_a_failed_tasks_traceback(capfd):
    """With --workers 2 a backtest printed 30 lines of GARCH warnings, and a bad asset 98 lines with "Compute
    Failed" and a worker traceback before its one-line error; one process prints nothing or that line (session
    31's red team). A cluster of its own: its workers write to the captured stderr."""
    daily_bars = pd.DataFrame({"close": [1.0, 1.1]}, index=pd.date_range("2024-01-01", periods=2, tz="UTC"))
    daily_bars.attrs.update(freq=pd.Timedelta(days=1), source="btc_1d.csv")
    with executor(workers=1) as ex:
        assert ex.map(_warns_as_arch_does, [1, 2], progress=False) == [1, 2]
        with pytest.raises(DataError):
            ex.map(default_min_bars, [daily_bars], progress=False)
        time.sleep(0.5)  # the worker's own stderr
    err = capfd.readouterr().err
    assert "did not converge" not in err and "Compute Failed" not in err and "Traceback" not in err


def test_a_local_cluster_leaves_no_scratch_space(tmp_path, monkeypatch):
    """Every --workers run left dask-scratch-space/ (lock files; worker folders after a kill) in the temp folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with executor(workers=1) as ex:
        assert ex.map(_slow_identity, [1], [0.0], progress=False) == [1]
    assert list(tmp_path.iterdir()) == []


def test_local_cluster_listens_on_loopback_only(cluster):
    ex, sockets = cluster
    try:
        info = ex.client.scheduler_info(n_workers=-1)  # newer Dask lists only the first few workers by default
    except TypeError:
        info = ex.client.scheduler_info()
    addresses = [info["address"], *info["workers"], *(w["nanny"] for w in info["workers"].values())]
    assert len(info["workers"]) == 2
    assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
    assert sockets and {host for host, _ in sockets} == {"127.0.0.1"}, sockets  # incl. HTTP endpoints


def test_cli_with_local_workers_writes_identical_forecasts(csv_files, tmp_path, capsys, caplog):
    assert main(["backtest", "--data", *csv_files, *CLI_ARGS, "--out", str(tmp_path / "one")]) == 0
    assert main(["backtest", "--data", *csv_files, *CLI_ARGS, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert "2 local Dask workers (tcp://127.0.0.1:" in capsys.readouterr().out
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("distributed")]  # no Dask chatter
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "two" / "forecasts.parquet"),
                                  pd.read_parquet(tmp_path / "one" / "forecasts.parquet"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "two" / "scores.csv"), pd.read_csv(tmp_path / "one" / "scores.csv"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"], "--scheduler and --workers exclude each other"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach a Dask scheduler at tcp://127.0.0.1:1"),
        (["--scheduler", "tcp://127.0.0.1:port"], "is not a Dask address"),
    ],
)
def test_bad_cluster_options_end_in_one_line_error_quickly(csv_files, argv, message, tmp_path, capsys):
    began = time.perf_counter()
    code = main(["backtest", "--data", *csv_files, *CLI_ARGS, "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert time.perf_counter() - began < 8


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"], "--scheduler and --workers exclude each other"),
])
def test_run_takes_the_cluster_options_of_backtest(argv, message, tmp_path, capsys):
    code = main(["run", "--out", str(tmp_path / "run"), *argv])  # refused before any data or training
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_address_of_a_worker_is_not_taken_for_a_scheduler(cluster):
    worker = next(iter(cluster[0].client.nthreads()))
    with pytest.raises(ConfigError, match="not as a Dask scheduler: it is a Worker"):
        with executor(scheduler=worker, timeout=3):
            pass


# --- session 27's mutation audit: an empty scheduler address, workers of another version

def test_an_empty_scheduler_address_is_refused_not_run_in_process():
    from volmargin.distributed import check_options, executor

    with pytest.raises(ConfigError, match="--scheduler is empty"):
        check_options("  ", None)
    with pytest.raises(ConfigError, match="--scheduler is empty"):
        with executor(scheduler=""):
            pass


def test_workers_of_another_volmargin_version_are_refused():
    from volmargin import __version__
    from volmargin.distributed import _check_workers

    class Cluster:
        def __init__(self, versions):
            self.versions = versions

        def wait_for_workers(self, n, timeout):
            assert n >= 1

        def run(self, fn):
            return self.versions

    _check_workers(Cluster({"tcp://w1:1": __version__}), "tcp://head:8786", 1)
    with pytest.raises(ConfigError, match=r"another volmargin version than this one .*tcp://w2:1 has 0\.0\.1"):
        _check_workers(Cluster({"tcp://w1:1": __version__, "tcp://w2:1": "0.0.1"}), "tcp://head:8786", 1)
