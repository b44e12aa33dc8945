"""The volmargin command line (`volmargin COMMAND --help` for each command). Errors in the user's input end in
one line. The parser is in `arguments`; the commands in `learning` (forecasts), `bundles` (exported bundles)
and `books` (books of positions)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from volmargin_serving.errors import ServingError

from volmargin.cli.arguments import _policy_items, build_parser
from volmargin.cli.books import cmd_options, cmd_portfolio, cmd_simulate, portfolio_digest
from volmargin.cli.bundles import cmd_calibrate, cmd_margins, cmd_score
from volmargin.cli.learning import cmd_backtest, cmd_evaluate, cmd_export, cmd_report, cmd_run, cmd_train
from volmargin.errors import VolmarginError

__all__ = ["COMMANDS", "build_parser", "main", "portfolio_digest", "_policy_items"]

COMMANDS = {"run": cmd_run, "backtest": cmd_backtest, "evaluate": cmd_evaluate, "train": cmd_train,
            "export": cmd_export, "calibrate": cmd_calibrate, "score": cmd_score, "margins": cmd_margins,
            "report": cmd_report, "portfolio": cmd_portfolio, "options": cmd_options, "simulate": cmd_simulate}


def _interrupt(signum, frame) -> None:
    """SIGTERM as Ctrl-C: temporary files and staging folders are removed on the way out."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while the arguments are parsed or a command's libraries load
        print("volmargin: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    finally:
        logging.captureWarnings(False)  # as it was, for a caller in the same process (tests, notebooks)


def _main(argv: Sequence[str] | None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in our output
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:  # a new SQLite store's schema set-up is not news: keep errors on one line
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.captureWarnings(True)  # library warnings (a GARCH fit that did not converge, ...) only with -v:
        logging.getLogger("py.warnings").setLevel(logging.ERROR)  # the fit's result is used and scored as is
    if threading_is_main():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return COMMANDS[args.command](args)
    except (VolmarginError, ServingError) as exc:
        print(f"volmargin: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except Exception as exc:  # noqa: BLE001 - a last resort: a bug or an unforeseen failure, still one line
        if type(exc).__module__.split(".")[0] == "mlflow":
            print(f"volmargin: error: MLflow: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
            return 2
        if args.verbose:
            raise
        print(f"volmargin: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]} "
              "(rerun with -v for the traceback, and report it)", file=sys.stderr)
        return 1


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
