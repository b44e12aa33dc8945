"""What several commands share: the tracking check before any work, and the data of `--data`."""

from __future__ import annotations

from collections.abc import Sequence


def check_tracking(cli_uri: str | None, config_uri: str | None = None) -> None:
    """Before any work: the MLflow store the command will log to answers (one line within 10 s if not)."""
    from volmargin.tracking import check_tracking_uri, resolve_tracking_uri

    check_tracking_uri(resolve_tracking_uri(cli_uri, config_uri))


def load_data(paths: Sequence[str] | None, made_from: str | None = None, what: str = ""):
    """Bars per asset from the user's files, or the synthetic market when none are given: then only if `what`
    (a bundle, a run) was made from that market, by its data fingerprint `made_from` (None: not recorded). A
    bundle or run of another synthetic market (seed 7, 2 assets) was read on seed 0's prices under the same
    asset names, in silence (session 31's red teams)."""
    from volmargin.data import load_panel, synthetic_market
    from volmargin.errors import ConfigError
    from volmargin.tracking import data_fingerprint

    if paths:
        return load_panel(paths)
    print("No --data given: using the built-in synthetic market (4 assets, 3 years of hourly bars, seed 0).")
    bars = synthetic_market()
    if made_from is not None and made_from != data_fingerprint(bars)["sha256"]:
        raise ConfigError(f"--data: give the bars to read; {what} was made from another market than the built-in "
                          "synthetic one (its data fingerprint differs)")
    return bars
