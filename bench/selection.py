"""A learned-model change judged the way the README's rules do: three unseen-asset selection runs, one verdict.

    python bench/selection.py --variants '{"gbm": ["gbm", {}], "gbm_rv": ["blend", {"weight": 1.0, "long_share":
        0.1}]}' --reference gbm --candidate gbm_rv [--min-gain 0.003] [--root runs/selection]

Until session 19 the rules read two selection runs, both in 2021; a change that passed them there (the GRU
trained by log least squares) was neutral on the 2022-2025 report and far worse on 2020. So the selection
reads three periods, all before the report's first target day (2022-01-01):

- `2021q4`: the 129 assets trained to 2021-09-30, scored over 2021-Q4 (`--min-train 150`: the alts' first year);
- `2021`: the 29 large caps trained to 2020-12-31, scored over 2021;
- `2020`: the 29 large caps trained to 2019-12-31, scored over 2020 (the 22 with a year of history by then).

Each run is `bench/unseen_assets.py` with `--models ''` and these variants, in its own folder under `--root`,
whose parts are reused (a variant is fitted once per folder; its log is `run.log` there). The verdict: the
candidate is kept if its pooled QLIKE / HAR on the unseen assets is below the reference's by at least
`--min-gain` on every run (`--candidate a,b`: a verdict for each). The 99% VaR exception rates and Kupiec
shares of each run are printed beside it, for rules on the tails. Write the rule and the candidates down
before the first run.

`--seeds 0,1,2` fits every variant once per seed (the GBM's `random_state`, the GRU's `seed`, both in a
blend; seed 0, every model's default, keeps the plain label, so earlier parts are reused; the others are
labelled `label#seed`) and judges the seed means. One run's QLIKE / HAR moves by 0.003-0.01 with the GBM's
seed alone (session 20: 1.0233 / 1.0267 / 1.0343 on 2021-Q4), as much as the gains the rule asks for.

`--trial TRIAL` judges a feature of `bench/unseen_feature_trials.py` (e.g. `semi:5`) in the same command: the
candidates (and their seeds) are fitted in a process with the trial's columns installed, the other variants in
a plain one. Give a trial's candidate a label of its own (parts are reused by label):

    python bench/selection.py --trial rq:5 --variants '{"gbm": ["gbm", {}], "gbm_rq5": ["gbm", {}]}' \
        --reference gbm --candidate gbm_rq5 --seeds 0,1,2 --root runs/selection-gbm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from unseen_assets import accuracy
from unseen_har_blend import ratio_to_har

BENCH = Path(__file__).resolve().parent
TAIL_COLUMNS = ("var99_long_rate", "var99_short_rate", "kupiec_ok_long", "kupiec_ok_short")
RUNS = {
    "2021q4": ["--train-end", "2021-09-30", "--score-end", "2021-12-31", "--min-train", "150"],
    "2021": ["--train-end", "2020-12-31", "--score-end", "2021-12-31", "--top-only"],
    "2020": ["--train-end", "2019-12-31", "--score-end", "2020-12-31", "--top-only"],
}


def fitting_calls(variants: dict, candidates: list[str], trial: str | None) -> list[tuple[list[str], dict]]:
    """(script and its first arguments, the variants it fits) for each process of one run: every variant in
    `bench/unseen_assets.py`, or with a `trial` the candidates (every seed) in `bench/unseen_feature_trials.py
    TRIAL` and the others in the plain script."""
    plain = [str(BENCH / "unseen_assets.py")]
    if trial is None:
        return [(plain, variants)]
    tried = {label: v for label, v in variants.items() if label.split("#")[0] in candidates}
    others = {label: v for label, v in variants.items() if label not in tried}
    return [(plain, others), ([str(BENCH / "unseen_feature_trials.py"), trial], tried)]


def run_selection(calls: list[tuple[list[str], dict]], root: Path, runs: list[str]
                  ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """QLIKE / HAR on the unseen assets, (model, run), and each run's tails (99% exception rates and Kupiec
    shares per model), after each run's `fitting_calls` (their log: `run.log`)."""
    ratios, tails = {}, {}
    for name in runs:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        with open(folder / "run.log", "w") as log:
            for script, variants in calls:
                done = subprocess.run([sys.executable, *script, *RUNS[name], "--models", "", "--variants",
                                       json.dumps(variants), "--out", str(folder)], stdout=log, stderr=subprocess.STDOUT)
                if done.returncode:
                    raise SystemExit(f"selection run {name} failed (exit {done.returncode}): see {folder / 'run.log'}")
        forecasts = pd.read_parquet(folder / "forecasts.parquet")
        ratios[name] = ratio_to_har(forecasts)
        unseen = forecasts[forecasts["set"].isin(["unseen", "both"]) & (forecasts["horizon"] == 1)]
        tails[name] = accuracy(unseen.drop(columns="set")).set_index("model")[list(TAIL_COLUMNS)]
        print(f"  {name}: {time.perf_counter() - began:.0f} s", flush=True)
    return pd.DataFrame(ratios), tails


SEED_PARAMETERS = {"gbm": "random_state", "nn": "seed"}  # a blend sets both in its members' params


def with_seed(model: str, params: dict, seed: int) -> dict:
    """A variant's params with every member's seed set to `seed` (a copy)."""
    if model == "blend":  # a member's params may be absent or None: its defaults
        return {**params, **{member: {**(params.get(member) or {}), name: seed}
                             for member, name in SEED_PARAMETERS.items()}}
    if model not in SEED_PARAMETERS:
        raise SystemExit(f"--seeds: no seed parameter known for model {model!r} (gbm, nn, blend)")
    return {**params, SEED_PARAMETERS[model]: seed}


def seeded(variants: dict, seeds: list[int]) -> dict:
    """Every variant once per seed: the plain label for seed 0 (every model's default), `label#seed` otherwise."""
    return {label if seed == 0 else f"{label}#{seed}": [model, with_seed(model, params, seed)]
            for label, (model, params) in variants.items() for seed in seeds}


def seed_means(ratios: pd.DataFrame, labels: set[str]) -> pd.DataFrame:
    """QLIKE / HAR per variant and run, averaged over the seeds of each variant this call asked for (`label#seed`
    rows among `labels`): seed parts an earlier call left in the folder do not enter another call's means."""
    asked = [label for label in ratios.index if "#" not in label or label in labels]
    return ratios.loc[asked].groupby(pd.Index(asked).str.split("#").str[0]).mean()


def verdict(ratios: pd.DataFrame, reference: str, candidate: str, min_gain: float) -> bool:
    """Kept when the candidate's QLIKE / HAR is below the reference's by at least `min_gain` on every run."""
    return bool((ratios.loc[reference] - ratios.loc[candidate] >= min_gain).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="JSON label -> [model, params], as bench/unseen_assets.py")
    parser.add_argument("--reference", required=True, help="the variant as it is")
    parser.add_argument("--candidate", required=True, help="the change (comma-separated: several)")
    parser.add_argument("--min-gain", type=float, default=0.003)
    parser.add_argument("--root", type=Path, default=Path("runs/selection"))
    parser.add_argument("--runs", default=",".join(RUNS), help=f"a subset of {', '.join(RUNS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of every variant; the verdict reads "
                        "their means (default 0: one fit per variant)")
    parser.add_argument("--trial", default=None, help="a bench/unseen_feature_trials.py TRIAL (e.g. semi:5) whose "
                        "columns the candidates read; the other variants are fitted without them")
    args = parser.parse_args()
    variants, seeds = json.loads(args.variants), [int(s) for s in args.seeds.split(",")]
    labels, candidates = set(variants), args.candidate.split(",")
    if not {args.reference, *candidates} <= labels:
        parser.error(f"--reference and --candidate must be labels of --variants ({', '.join(sorted(labels))})")
    if seeds != [0]:
        variants = seeded(variants, seeds)
    calls = fitting_calls(variants, candidates, args.trial)
    per_seed, tails = run_selection(calls, args.root, args.runs.split(","))
    if seeds != [0]:
        print("\nQLIKE / HAR per seed:\n")
        print(per_seed.to_markdown(floatfmt=".4f"))
    ratios = seed_means(per_seed, set(variants))
    table = ratios.assign(mean=ratios.mean(axis=1)).sort_values("mean")
    print(f"\nQLIKE / HAR, unseen assets, selection runs{' (seed means)' if seeds != [0] else ''}:\n")
    print(table.to_markdown(floatfmt=".4f"))
    print("\n99% VaR exception rates and the share of assets with Kupiec p > 0.05 (not in the verdict):\n")
    shown = [args.reference, *candidates, "har"]
    print(pd.concat({run: frame.reindex(shown) for run, frame in tails.items()}).to_markdown(floatfmt=".4f"))
    for candidate in candidates:
        kept = verdict(ratios, args.reference, candidate, args.min_gain)
        gains = (ratios.loc[args.reference] - ratios.loc[candidate]).round(4).to_dict()
        print(f"\n{candidate} against {args.reference}: gain per run {gains}; "
              f"{'KEPT' if kept else 'not kept'} (>= {args.min_gain} on every run)")


if __name__ == "__main__":
    main()
