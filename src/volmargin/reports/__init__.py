"""Reports of a run folder: `build_report(run_dir) -> str` and `write_report(run_dir, out) -> Path`
render the model comparison (data, leaderboard, VaR/ES backtests, plots, margins, provenance) as one
self-contained HTML file that opens offline."""

from volmargin.reports.report import build_report, write_report

__all__ = ["build_report", "write_report"]
