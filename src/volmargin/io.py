"""Safe outputs: a reader sees the old output or the complete new one, never half of one.

- Single files (`atomic_path`, `write_atomic`, `write_frame`) are written to a temporary file beside the
  target and renamed onto it. Only a regular file (or a symlink to one, written through) is ever
  replaced: a device node, FIFO, socket or folder at the target is refused, so `--out /dev/full` cannot
  turn the device into a CSV.
- Multi-file outputs (`staged_folder`: a backtest folder, a training folder) are written into a staging
  folder beside the target and swapped into place in one step (`renameat2(RENAME_EXCHANGE)` where the
  kernel has it, else two renames with recovery); the old folder is removed after.
- A long job that writes into its folder as it goes (`volmargin run`) marks the folder incomplete first
  and complete last (`mark_incomplete`, `mark_complete`); readers call `check_complete`.
- `output_lock` (an `fcntl` lock on a hidden file beside the output) keeps two writers of one output
  from interleaving: the second stops at once with one line.
- Temporary files and staging folders are removed on any error or interrupt (the CLI turns SIGTERM
  into one), and stale ones a SIGKILL left behind are removed by the next writer of that output.
A folder is only replaced or written into if it is empty or a volmargin output (it holds `MARKER`; a
`run.json` alone may be the user's own), so `--out .` cannot wipe a folder of the user's own files.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from volmargin_serving.bundle import MANIFEST

from volmargin.errors import ConfigError, OutputError

MARKER = ".volmargin-output"  # in every folder volmargin writes; its presence allows replacing the folder
RECORD = "run.json"  # carries "complete": false while a job that writes in place is under way
_RENAME_EXCHANGE = 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def usual_mode(path: Path, folder: bool = False) -> None:
    """mkstemp / mkdtemp make private 0600 / 0700 paths; outputs get the usual umask-based mode."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_target(target: str | Path) -> Path:
    """The path to write for `target`: itself, or what it links to; OutputError unless that is absent or
    a regular file."""
    target = Path(target)
    try:
        real = target.resolve(strict=False) if target.is_symlink() else target
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except (OSError, RuntimeError) as exc:  # a symlink loop, a path through a file, ...
        raise OutputError(f"{target}: cannot write here ({exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise OutputError(f"{target} is {kind}; volmargin writes only regular files, give a file path")
    return real


def _writer_tag() -> str:
    """Host and process of this writer, in its temporary files' names, so that a later writer can tell the
    files a killed process left (SIGKILL runs no cleanup) from those of one still writing."""
    return f"{socket.gethostname().replace('.', '-')}-{os.getpid()}"


def _siblings(target: Path, start: str, suffix: str, dots: int = 0) -> list[Path]:
    """`target`'s own hidden files `.{name}.{start}<token>{suffix}`, their token holding `dots` dots, compared as
    text, not as a glob pattern: a name with glob characters (`exp[1]`) matched another output's (`exp1`) and
    removed its staging folder; the dots keep `exp`'s apart from `exp.1`'s."""
    prefix = f".{target.name}.{start}"
    if not target.parent.is_dir():
        return []
    return [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)
            and p.name[len(prefix):len(p.name) - len(suffix)].count(".") == dots]


def _sweep_dead_writers(target: Path) -> None:
    """Remove the temporary files of `target` that a process of this host left and no longer runs."""
    host = socket.gethostname().replace(".", "-")
    for tmp in _siblings(target, f"{host}-", ".tmp", dots=1):  # <pid>.<random>
        pid = tmp.name[len(f".{target.name}.{host}-"):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_dead_writers(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_writer_tag()}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_why(exc)}") from None
    os.close(fd)
    try:
        usual_mode(Path(tmp))
        yield Path(tmp)
        check_target(target)  # it may have become something else while we wrote
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {target}: {_why(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(target: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


TABLE_SUFFIXES = (".parquet", ".csv")


def write_frame(frame: pd.DataFrame, target: str | Path) -> Path:
    """Write a table as Parquet or CSV (by suffix), atomically."""
    target = Path(target)
    if target.suffix == ".parquet":
        return write_atomic(target, lambda p: frame.to_parquet(p, index=False))
    return write_atomic(target, lambda p: frame.to_csv(p, index=False))


def read_table(path: str | Path) -> pd.DataFrame:
    """A Parquet or CSV table volmargin wrote; OutputError naming the file if it is missing or damaged."""
    import pyarrow as pa

    path = Path(path)
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except FileNotFoundError:
        raise OutputError(f"{path}: not found") from None
    except (pa.ArrowException, OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise OutputError(f"{path}: unreadable, truncated or damaged ({' '.join(str(exc).split())[:200]}); "
                          "write it again") from None


FORECAST_COLUMNS = ("asset", "model", "origin", "variance", "realized_rv", "realized_ret")


def read_forecasts(folder: str | Path, option: str = "--run") -> pd.DataFrame:
    """The forecasts.parquet of a run folder (`volmargin backtest` or `run`), for every command that reads one:
    a one-line error naming the file when it is missing, damaged, lacks a column or holds no forecast."""
    path = Path(folder) / "forecasts.parquet"
    if not path.is_file():
        raise ConfigError(f"{option} {folder}: no forecasts.parquet (a folder written by `volmargin backtest` or "
                          "`volmargin run`)")
    forecasts = read_table(path)
    missing = [column for column in FORECAST_COLUMNS if column not in forecasts]
    if missing:
        raise OutputError(f"{path}: not a volmargin forecast table (no column {', '.join(missing)}); "
                          "write it again with `volmargin backtest`")
    if forecasts.empty:
        raise OutputError(f"{path}: holds no forecasts; write it again with `volmargin backtest`")
    if not isinstance(forecasts["origin"].dtype, pd.DatetimeTZDtype):
        raise OutputError(f"{path}: column origin holds {forecasts['origin'].dtype}, not UTC timestamps; "
                          "write it again with `volmargin backtest`")
    variance = pd.to_numeric(forecasts["variance"], errors="coerce")
    tails = [c for c in forecasts if c.startswith(("var", "es")) and c != "variance"]  # var99_long, es975_short...
    tail = forecasts[tails].apply(pd.to_numeric, errors="coerce") if tails else pd.DataFrame(index=forecasts.index)
    for problem, rows in (("twice", forecasts.duplicated(["model", "asset", "origin"])),
                          ("with a variance that is not a positive number", ~(variance > 0) | variance.isin([np.inf])),
                          ("with a VaR or ES that is not a finite number", ~np.isfinite(tail).all(axis=1))):
        if rows.any():
            first = forecasts.loc[rows.to_numpy()].iloc[0]
            raise OutputError(f"{path}: the forecast of {first['model']} for {first['asset']} at "
                              f"{first['origin']:%Y-%m-%d} is there {problem}; write it again with `volmargin backtest`")
    return forecasts


def refuse_inside_bundle(target: str | Path) -> None:
    """OutputError where `target` lies inside a model bundle (a folder holding a manifest and its model): even a
    failed write leaves a lock file there, and a bundle whose folder holds a file it does not list is refused for
    good (`calibrate --out B/x.json`, `export --root B`; session 31's red teams)."""
    inside = next((p for p in Path(os.path.abspath(target)).parents
                   if (p / MANIFEST).is_file() and (p / "model.onnx").is_file()), None)
    if inside is not None:
        raise OutputError(f"cannot write {target}: {inside} is a model bundle, which holds only its own files; "
                          "write beside it")


def preflight(target: str | Path, folder: bool = False, suffixes: tuple[str, ...] = ()) -> Path:
    """Before any work: OutputError unless `target` can be written (a regular file or absent, or for a
    folder output an empty or volmargin folder) in a writable place, and ends in one of `suffixes` if given."""
    target = check_folder(target) if folder else check_target(target)
    refuse_inside_bundle(target)
    if suffixes and target.suffix not in suffixes:
        raise OutputError(f"cannot write {target}: name it {' or '.join(suffixes)} (the format follows the name)")
    existing = next((p for p in target.parents if p.exists()), Path("."))  # staging and temp files go beside it
    if not existing.is_dir():
        raise OutputError(f"cannot write {target}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {target}: {existing} is not writable")
    try:  # what access() cannot see: root in /proc, a read-only mount, a full inode table
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".volmargin-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {existing} takes no new file ({_why(exc)})") from None
    return target


# ------------------------------------------------------------------ locks


@contextmanager
def output_lock(target: str | Path, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on `target` (a file or folder, existing or not) for the block; OutputError
    if another process holds it for more than `wait` seconds (0: at once)."""
    target = Path(target)
    lock = target.parent / f".{target.name}.lock"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # never through a link (a planted one would have the note overwrite a file elsewhere), never a device
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        why = "its lock file is a symbolic link" if exc.errno == errno.ELOOP else _why(exc)
        raise OutputError(f"cannot write {target}: {why} ({lock})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OutputError(f"cannot write {target}: its lock file {lock} is not a regular file")
    handle = os.fdopen(descriptor, "r+")
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise OutputError(f"{target} is being written by {holder}; wait for it to finish or choose "
                                  "another output") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"volmargin process {os.getpid()}")
            handle.flush()
        except OSError as exc:  # a full disk: the lock is held all the same, its note is what failed
            raise OutputError(f"cannot write {target}: {_why(exc)}") from None
        yield
    finally:
        try:
            handle.close()  # releases the lock; the empty-ish lock file stays (removing it would race)
        except OSError:
            pass  # the note could not be flushed (disk full): nothing of the output depends on it


# ------------------------------------------------------------------ folders


def check_folder(target: str | Path) -> Path:
    """OutputError unless `target` is absent, an empty folder or a volmargin output folder."""
    target = Path(target)
    try:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise OutputError(f"{target} exists and is not a folder; give a folder path for this output")
        # only the marker proves it: a user's folder holding a file named run.json was replaced before
        if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
            raise OutputError(f"{target} holds files volmargin did not write; give a new or empty folder "
                              "(volmargin replaces only its own output folders)")
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"{target}: cannot use this folder ({_why(exc)})") from None
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with renameat2(RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OutputError(f"cannot replace {b}: {os.strerror(code)}")


def _recover(target: Path) -> None:
    """Undo an interrupted two-rename swap (target gone, its old copy kept) and drop stale staging."""
    leftovers = sorted(_siblings(target, "", ".old"))
    if leftovers and not target.exists():
        os.rename(leftovers[-1], target)
        leftovers = leftovers[:-1]
    for stale in [*leftovers, *_siblings(target, "", ".staging")]:
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; when the block succeeds it replaces `target` in one
    step (the old folder, if any, is removed after). On any error or interrupt nothing changes."""
    target = check_folder(target)
    with output_lock(target):
        try:
            _recover(target)
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {_why(exc)}") from None
        try:
            usual_mode(staging, folder=True)
            (staging / MARKER).touch()
            yield staging
            if not (staging / MARKER).is_file():  # removed while written (and remade by a write into it)
                raise OutputError(f"cannot write {target}: its staging folder {staging} was removed during the "
                                  "write; nothing was replaced")
            check_folder(target)
            if not target.exists():
                os.rename(staging, target)
            elif _exchange(staging, target):
                shutil.rmtree(staging, ignore_errors=True)  # now the old folder
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                os.replace(target, old)  # an empty dir is replaced; if killed here, _recover restores it
                os.rename(staging, target)
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"cannot write {target}: {_why(exc)}") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def mark_incomplete(folder: str | Path, record: dict) -> None:
    """Before a job writes into `folder` in place: its record says `complete: false` (checked folder)."""
    folder = check_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).touch()
    except OSError as exc:
        raise OutputError(f"cannot write {folder}: {_why(exc)}") from None
    write_atomic(folder / RECORD, lambda p: p.write_text(json.dumps({**record, "complete": False}, indent=2,
                                                                    default=str)))


def check_complete(folder: str | Path) -> Path:
    """ConfigError if `folder` does not exist (before a command creates anything beside it), OutputError if its
    run.json says the job that wrote it did not finish."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--run {folder}: no such folder (one written by a volmargin job)")
    path = folder / RECORD
    if not path.is_file():
        return folder
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path}: unreadable or damaged ({exc}); run the job again") from None
    if isinstance(record, dict) and record.get("complete") is False:
        failed = record.get("failed_stage", {}).get("stage") if isinstance(record.get("failed_stage"), dict) else None
        why = f"stage '{failed}' failed" if failed else "the job that writes it was interrupted or is still running"
        raise OutputError(f"{folder} is incomplete ({why}); run it again")
    return folder
