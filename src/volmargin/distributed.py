"""Run independent tasks in this process, on a local Dask cluster, or on an existing one.

One mechanism for every command that splits work by asset (`volmargin backtest`, `volmargin score`):

    with executor(scheduler=args.scheduler, workers=args.workers) as ex:
        shipped = ex.scatter(frames)                       # dict in, dict of handles out
        results = ex.map(task, assets, [shipped[a] for a in assets], progress=True)

`map` returns results in the order of its inputs, whatever order the tasks finish in, so a
distributed run produces exactly what the in-process run produces. A task that raises a
`VolmarginError` on a worker raises that same error (type and message) here.

- neither option: everything runs in this process (no Dask import at all);
- `workers=N`: a `LocalCluster` of N single-threaded worker processes bound to 127.0.0.1 only;
- `scheduler=ADDRESS`: an existing cluster (`dask scheduler` + `dask worker ADDRESS --nthreads 1`
  on machines with the same volmargin version installed). The driver reads the data files and ships
  the inputs to the workers; workers need no access to the files.

Each task runs with single-threaded math (BLAS/OpenMP pools and torch limited to one thread), here as
on a worker: N workers on N cores do not oversubscribe them, and a task's result does not depend on
where it ran (multi-threaded BLAS changes the rounding, enough to move GARCH optima).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from volmargin.errors import ConfigError, VolmarginError
from volmargin.progress import progress_counter

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler (and for it to have a worker) before giving up
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# Housekeeping of a local cluster, which has no dashboard to feed: by default the workers sample their
# task's stack every 10 ms (the profiler) and the nannies check memory every 100 ms, which kept 11% of a
# core busy on an idle 2-worker cluster (1.6% with these settings), taken from the tasks on 2 cores.
QUIET_CLUSTER = {
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",  # a runaway worker is still restarted
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.tick.interval": "1s",  # event-loop health checks
}


class Executor(Protocol):
    """What the commands need: ship data once, run one function over many inputs, ordered results."""

    description: str
    distributed: bool
    slots: int  # tasks it runs at once: how finely to split work so that none sits idle

    def scatter(self, data: dict[str, Any]) -> dict[str, Any]: ...

    def map(self, fn: Callable[..., T], *iterables: Iterable, desc: str = "tasks", unit: str = "task",
            progress: bool = True) -> list[T]: ...


class InProcess:
    """Runs every task here, one after another (the default)."""

    description = "this process"
    distributed = False
    slots = 1

    def scatter(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def map(self, fn: Callable[..., T], *iterables: Iterable, desc: str = "tasks", unit: str = "task",
            progress: bool = True) -> list[T]:
        calls = list(zip(*iterables))
        results = []
        with single_threaded(), progress_counter(len(calls), desc, unit, progress and bool(calls)) as counter:
            for args in calls:  # on one thread, as on a worker, so the results are the same
                results.append(fn(*args))
                counter.update()
        return results


class DaskExecutor:
    """Runs tasks on a `dask.distributed.Client`: one future per input, collected in input order."""

    distributed = True

    def __init__(self, client, description: str) -> None:
        self.client = client
        self.description = description

    @property
    def slots(self) -> int:
        """Worker threads in the cluster now (one per single-threaded worker process)."""
        return max(1, sum(self.client.nthreads().values()))

    def scatter(self, data: dict[str, Any]) -> dict[str, Any]:
        """Send each value to the cluster once; tasks get a handle instead of a copy in every task."""
        if not data:
            return {}
        return self.client.scatter(dict(data), hash=False)

    def map(self, fn: Callable[..., T], *iterables: Iterable, desc: str = "tasks", unit: str = "task",
            progress: bool = True) -> list[T]:
        from dask.distributed import as_completed

        calls = list(zip(*iterables))
        if not calls:
            return []
        batch = uuid.uuid4().hex[:8]
        name = getattr(fn, "__name__", "task")
        futures = [self.client.submit(_run_single_threaded, fn, *args, key=f"{name}-{batch}-{i}", pure=False)
                   for i, args in enumerate(calls)]
        try:
            with progress_counter(len(futures), desc, unit, progress) as counter:
                for future in as_completed(futures, loop=self.client.loop):
                    if future.status == "error":
                        _raise_task_error(future)
                    counter.update()
            return [future.result() for future in futures]  # input order, not completion order
        finally:
            self.client.cancel([f for f in futures if not f.done()])


def check_options(scheduler: str | None, workers: int | None) -> None:
    """ConfigError for --scheduler with --workers, or --workers below 1 (call before loading data)."""
    if scheduler is not None and not scheduler.strip():
        raise ConfigError("--scheduler is empty; give an address such as tcp://HEAD:8786")
    if scheduler and workers is not None:
        raise ConfigError("--scheduler and --workers exclude each other: --scheduler ADDRESS uses an existing "
                          "Dask cluster, --workers N starts a local one")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")


@contextmanager
def executor(scheduler: str | None = None, workers: int | None = None,
             timeout: float = CONNECT_TIMEOUT) -> Iterator[InProcess | DaskExecutor]:
    """In-process by default; `workers=N` starts a loopback-only local cluster for the duration;
    `scheduler=ADDRESS` connects to an existing cluster (left running afterwards)."""
    check_options(scheduler, workers)
    if not scheduler and workers is None:
        yield InProcess()
        return
    # Dask logs at INFO through the root logger's handlers (cluster start, every connection): keep its
    # own warnings about a remote cluster, nothing but errors from a local one
    import distributed  # noqa: F401 - its import configures its loggers, so import it before changing them

    with _logger_level("distributed", logging.WARNING if scheduler else logging.ERROR):
        if scheduler:
            with _remote_client(scheduler, timeout) as client:
                count = len(client.nthreads())  # scheduler_info() lists only the first few workers
                yield DaskExecutor(client, f"Dask cluster {scheduler} ({count} workers)")
        else:
            with _local_client(workers) as client:
                yield DaskExecutor(client, f"{workers} local Dask worker{'s' if workers > 1 else ''} "
                                           f"({client.scheduler.address})")


@contextmanager
def _logger_level(name: str, level: int) -> Iterator[None]:
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(old)


@contextmanager
def _local_client(workers: int):
    import dask
    from dask.distributed import Client

    with dask.config.set(QUIET_CLUSTER), _local_cluster(workers) as cluster:  # workers inherit the config
        with Client(cluster, set_as_default=False) as client:
            yield client


@contextmanager
def _workers_ignore_ctrl_c():
    """Processes started in the block inherit an ignored SIGINT (Python keeps it ignored at start-up): a
    terminal's Ctrl-C reaches the whole process group, and each worker printed its own traceback; the driver
    alone handles it and closes the cluster."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _local_cluster(workers: int):
    import dask
    from dask.distributed import LocalCluster

    scratch = tempfile.mkdtemp(prefix="volmargin-dask-")  # its lock files and worker folders go with it
    with _workers_ignore_ctrl_c(), dask.config.set({"temporary-directory": scratch}):
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
            # the scheduler's HTTP endpoint (health, metrics) would otherwise take port 8787 on every run and
            # warn when another run holds it: a free port, on loopback like everything else
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            env={var: "1" for var in _THREAD_VARS},
            # no worker chatter on stderr, not even "Compute Failed" with a traceback: the driver re-raises a
            # task's error as its one line (`_raise_task_error`)
            silence_logs=logging.CRITICAL, local_directory=scratch,
        )
    try:
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _remote_client(address: str, timeout: float):
    from dask.distributed import Client

    # Probe first: a failed `Client(...)` leaves an object whose finalizer prints a traceback at exit.
    _probe_scheduler(address, timeout)
    try:
        client = Client(address, timeout=f"{timeout}s", set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use that cluster"
        raise ConfigError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
    try:
        _check_workers(client, address, timeout)
        yield client
    finally:
        client.close()


def _probe_scheduler(address: str, timeout: float) -> None:
    """A ConfigError naming the address unless a Dask scheduler answers there within `timeout` s."""
    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.security import Security

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location, 8786)
    except ValueError as exc:
        raise ConfigError(f"--scheduler {address!r} is not a Dask address (e.g. tcp://HEAD:8786): {exc}") from None
    if scheme == "tcp":  # a refused or unresolvable address fails now, not after `timeout` s of retries
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise ConfigError(f"cannot reach a Dask scheduler at {address}: {exc.strerror or exc}") from None

    async def identity() -> dict:
        # TLS settings, if any, come from the Dask configuration, as for `Client(address)`
        comm = await connect(address, timeout=timeout, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await asyncio.wait_for(comm.read(), timeout)
        finally:
            await comm.close()

    # a daemon thread of its own, so this works whether or not the caller already runs an event loop, and
    # a server that accepts the connection and never answers cannot hold the command (or its exit) past
    # the deadline: a pool's worker thread would be joined at exit, and hang there
    future: concurrent.futures.Future = concurrent.futures.Future()

    def probe() -> None:
        try:
            future.set_result(asyncio.run(asyncio.wait_for(identity(), timeout)))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            future.set_exception(exc)

    threading.Thread(target=probe, name="volmargin-dask-probe", daemon=True).start()
    try:
        reply = future.result(timeout=timeout + 1)
    except Exception as exc:  # noqa: BLE001 - refused, unresolvable, timed out, not speaking Dask
        reason = "a garbled reply" if isinstance(exc, MemoryError) else (str(exc) or type(exc).__name__)[:300]
        if scheme == "tcp":  # the TCP connection worked: something else listens there
            raise ConfigError(f"{address} does not answer as a Dask scheduler within {timeout:g} s ({reason}); "
                              "is it the scheduler's port (8786 unless set)?") from None
        raise ConfigError(f"cannot reach a Dask scheduler at {address} within {timeout:g} s: {reason}") from None
    kind = reply.get("type", "server") if isinstance(reply, dict) else "server"
    if kind != "Scheduler":
        raise ConfigError(f"{address} answers, but not as a Dask scheduler: it is a {kind} "
                          "(start a scheduler with `dask scheduler`)")


def _check_workers(client, address: str, timeout: float) -> None:
    """At least one worker, and every worker runs this volmargin version."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception:  # noqa: BLE001 - TimeoutError, under any of its names
        raise ConfigError(f"the Dask scheduler at {address} has no workers after {timeout:g} s; start some "
                          f"with `dask worker {address} --nthreads 1`") from None
    from volmargin import __version__

    try:
        versions = client.run(_volmargin_version)
    except Exception as exc:  # noqa: BLE001 - typically ModuleNotFoundError while unpickling on the worker
        raise ConfigError(f"workers of {address} cannot run volmargin ({exc}); install volmargin {__version__} "
                          "on every worker machine") from None
    wrong = {w: v for w, v in versions.items() if v != __version__}
    if wrong:
        listed = ", ".join(f"{w} has {v}" for w, v in sorted(wrong.items()))
        raise ConfigError(f"workers of {address} run another volmargin version than this one ({__version__}): {listed}")


def _volmargin_version() -> str:
    from volmargin import __version__

    return __version__


@contextmanager
def single_threaded() -> Iterator[None]:
    """One thread for the BLAS/OpenMP pools (and torch, if loaded) for the duration, restored after.

    Every per-asset task runs under it, in this process as on a worker: besides not oversubscribing
    cores, results must not depend on where a task runs, and they would: multi-threaded BLAS sums in
    another order and GARCH fits then converge to (slightly) different optima.
    """
    torch = sys.modules.get("torch")  # only if something imported it; never import torch just for this
    torch_threads = torch.get_num_threads() if torch is not None else 1
    if torch_threads != 1:
        torch.set_num_threads(1)
    try:
        with _thread_pools().limit(limits=1):
            yield
    finally:
        if torch_threads != 1:
            torch.set_num_threads(torch_threads)


_pools: tuple[int, Any] | None = None  # (len(sys.modules) when scanned, ThreadpoolController)


def _thread_pools():
    """threadpoolctl's handle on the loaded BLAS/OpenMP libraries. Finding them takes 25-45 ms, which
    every task paid before (774 tasks in a 129-asset backtest): now once per process, and again after
    new imports, which may have loaded another library; setting the limits then costs microseconds."""
    global _pools
    from threadpoolctl import ThreadpoolController  # comes with scikit-learn

    if _pools is None or _pools[0] != len(sys.modules):
        _pools = (len(sys.modules), ThreadpoolController())
    return _pools[1]


def _run_single_threaded(fn: Callable[..., T], *args) -> T:
    """One task on a worker. The environment variables reach libraries a task loads later (torch's
    OpenMP reads OMP_NUM_THREADS when it loads); a worker process only ever runs such tasks."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    # library warnings (a GARCH fit that did not converge) print on the driver with -v only; a worker has no -v,
    # and arch turns its own warnings on inside its fit, so they go to a logger that drops them, as the CLI's do
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR)
    with single_threaded():
        return fn(*args)


def _raise_task_error(future) -> None:
    """Re-raise a failed task's exception as itself: a worker's DataError/ConfigError reaches the CLI
    as the same one-line message, not as a Dask error."""
    exc = future.exception()
    if isinstance(exc, VolmarginError):
        raise exc.with_traceback(None)  # the worker's frames mean nothing here
    future.result()  # anything else: Dask re-raises it with the worker's traceback
