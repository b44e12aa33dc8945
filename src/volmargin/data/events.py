"""Named crypto stress events: the crash days every stage replays (margins in calibration, books in the
portfolio stage, paths in the liquidation simulation, panels in the report). Market history, so it lives
with the data, where every later stage may read it."""

from __future__ import annotations

STRESS_EVENTS: dict[str, tuple[str, str]] = {  # inclusive UTC target days of each crash, in time order
    "covid-2020-03-12": ("2020-03-12", "2020-03-12"),
    "china-ban-2021-05-19": ("2021-05-19", "2021-05-19"),
    "luna-2022-05": ("2022-05-09", "2022-05-13"),
    "celsius-3ac-2022-06": ("2022-06-13", "2022-06-18"),
    "ftx-2022-11": ("2022-11-08", "2022-11-10"),
    "svb-usdc-2023-03": ("2023-03-09", "2023-03-11"),
    "carry-unwind-2024-08-05": ("2024-08-04", "2024-08-05"),
    "tariff-crash-2025-10-10": ("2025-10-10", "2025-10-10"),
}
