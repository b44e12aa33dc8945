"""What several commands share: the tracking check before any work, and the data of `--data`."""

from __future__ import annotations

from collections.abc import Sequence


def check_tracking(cli_uri: str | None, config_uri: str | None = None) -> None:
    """Before any work: the MLflow store the command will log to answers (one line within 10 s if not)."""
    from volmargin.tracking import check_tracking_uri, resolve_tracking_uri

    check_tracking_uri(resolve_tracking_uri(cli_uri, config_uri))


def load_data(paths: Sequence[str] | None):
    """Bars per asset from the user's files, or the synthetic market when none are given."""
    from volmargin.data import load_panel, synthetic_market

    if paths:
        return load_panel(paths)
    print("No --data given: using the built-in synthetic market (4 assets, 3 years of hourly bars, seed 0).")
    return synthetic_market()
