"""A small recurrent network for the h-day variance and per-side VaR/ES, trained on all assets at once.

Split as Lightning intends: `VolNet` is the plain network (the only part exported later, e.g. to
ONNX), `VolLightningModule` owns the losses and the optimiser, `VolDataModule` owns the windows and
the time split, and `NeuralForecaster` is the `GlobalForecaster` the walk-forward engine refits.

Targets are scale-free (`volmargin.features.learned`): the network predicts m = log(h-day RV) -
(level_t + log h), so the variance forecast is exp(level_t + log h + m), and the VaR/ES of the
standardized loss z_loss = -/+ r_std / exp(m / 2) (long / short). VaR/ES in return units are
sqrt(variance) x the standardized values.

Losses (summed, the tail part weighted by `tail_weight`):
- QLIKE on the variance, exp(y - m) - (y - m) - 1 with y the realised relative log variance: a
  strictly consistent loss for the conditional mean of RV that is robust to RV's noise (Patton 2011);
- FZ0 (Patton, Ziegel & Chen 2019), a strictly consistent joint loss for (VaR, ES) at tail
  probability a = 1 - level, here on positive losses with VaR v and ES e > 0:
      FZ0 = (z_loss - v)_+ / (a e) + v / e + log(e) - 1.
  z_loss uses the detached variance forecast: the tail outputs learn the shape of the standardized
  distribution, and the variance output gets gradients from QLIKE only (the shared encoder from both).

Ensembles (`members=N`, the crypto configs use 3): N networks trained from seeds seed .. seed + N - 1 (each its
own initial weights and held-out assets), averaged by `VolEnsemble` into one network to serve and export. On
unseen assets the GRU's figures move more with its seed than the GBM's (QLIKE / HAR 1.011-1.023 on 2022-2025)
and the average of three beat every seed (1.005; docs/unseen-assets.md, "The GRU's seed spread, and bagging it").

Tail calibration (`tail_calibration=True`; off by default): after training, each tail output (VaR and ES of
a side and level) is multiplied by the factor >= 1 that makes its VaR exceeded on the held-out assets' rows
after the validation cut as often as its level says (`distributions.coverage_factor`, the GBM's rule),
written into `VolNet.tail_scale` so that saved weights and the ONNX graph carry it. Not kept (session 10):
on both unseen-asset selection runs the GRU's 99% exceptions were already at or below 1% (long / short
0.79% / 0.53% on 129 assets over 2021-Q4, 1.06% / 0.97% on the 29 large caps over 2021), so widening could
only move them away from 1% (0.58% / 0.53% and 1.06% / 0.63% with it; QLIKE unchanged).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from volmargin.features.learned import (
    FEATURE_NAMES, FeatureSpec, check_levels, feature_frame, fitted_scaler, horizon_level, require_levels, standardize,
    training_frame,
)
from volmargin.models.base import SIDES, Forecast, GlobalForecaster, level_tag
from volmargin.models.distributions import coverage_factor


def output_columns(levels: tuple[float, ...]) -> list[str]:
    """VolNet's output columns: log_var_rel, then per side (long, short) VaR at each level (ascending)
    followed by ES at each level, all of the standardized loss."""
    columns = ["log_var_rel"]
    for side in SIDES:
        columns += [f"{kind}{level_tag(level)}_{side}" for kind in ("var", "es") for level in levels]
    return columns


def _softplus_inverse(value: float) -> float:
    return math.log(math.expm1(value))


class VolNet(nn.Module):
    """GRU encoder over a (batch, window, features) float32 sequence and a small head.

    Output (batch, 1 + 4 * n_levels), columns as in `output_columns`. Tails cannot cross:
    VaR_1 = softplus(a_1), VaR_j = VaR_{j-1} + softplus(a_j), ES_j = VaR_j + softplus(b_j). The buffer
    `tail_scale` (side, level), 1 while training, holds the tail calibration factors (`NeuralForecaster`):
    VaR and ES of each side and level are multiplied by it, VaR kept non-crossing by a running max over
    levels and ES >= VaR, inside the network so that its saved weights and ONNX graph carry them.
    """

    def __init__(self, n_features: int, n_levels: int = 2, hidden: int = 32, layers: int = 1):
        super().__init__()
        self.n_levels = n_levels
        self.encoder = nn.GRU(n_features, hidden, layers, batch_first=True)
        # the last day's features skip the encoder, so today's shock reaches the head directly
        self.head = nn.Sequential(
            nn.Linear(hidden + n_features, hidden), nn.GELU(), nn.Linear(hidden, 1 + 4 * n_levels)
        )
        self.register_buffer("tail_scale", torch.ones(2, n_levels))
        self._init_output()

    def _init_output(self) -> None:
        """Start from the same forecast for every input: the level variance (m = 0) and a fat-tailed
        unit-variance law (VaR ~2, level steps 0.3, ES - VaR 0.4), so training only has to learn
        departures from a sensible baseline."""
        bias = torch.zeros(2, 2, self.n_levels)
        bias[:, 0, 0] = _softplus_inverse(2.0)
        bias[:, 0, 1:] = _softplus_inverse(0.3)
        bias[:, 1, :] = _softplus_inverse(0.4)
        with torch.no_grad():
            self.head[-1].weight.zero_()
            self.head[-1].bias[0] = 0.0
            self.head[-1].bias[1:] = bias.reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded, _ = self.encoder(x)
        raw = self.head(torch.cat([encoded[:, -1], x[:, -1]], dim=1))
        tails = raw[:, 1:].reshape(-1, 2, 2, self.n_levels)  # (batch, side, var/es, level)
        var = torch.cumsum(F.softplus(tails[:, :, 0]), dim=2)
        es = (var + F.softplus(tails[:, :, 1])) * self.tail_scale
        var = _running_max(var * self.tail_scale)
        es = torch.maximum(es, var)
        return torch.cat([raw[:, :1], torch.stack([var, es], dim=2).reshape(-1, 4 * self.n_levels)], dim=1)


class VolEnsemble(nn.Module):
    """`VolNet`s trained from different seeds (and validation assets), averaged: the variance is the mean
    of the members' (log-mean-exp of their m), the standardized VaR and ES the mean of theirs, then the
    ensemble's own `tail_scale` as in `VolNet`. One network to serve and export, the members inside."""

    def __init__(self, members: list[VolNet]):
        super().__init__()
        self.n_levels = members[0].n_levels
        self.members = nn.ModuleList(members)
        self.register_buffer("tail_scale", torch.ones(2, self.n_levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([member(x) for member in self.members])  # (members, batch, columns)
        m = torch.logsumexp(outs[..., 0], dim=0) - math.log(len(self.members))
        tails = outs[..., 1:].mean(dim=0).reshape(-1, 2, 2, self.n_levels)  # (batch, side, var/es, level)
        var = _running_max(tails[:, :, 0] * self.tail_scale)
        es = torch.maximum(tails[:, :, 1] * self.tail_scale, var)
        return torch.cat([m[:, None], torch.stack([var, es], dim=2).reshape(-1, 4 * self.n_levels)], dim=1)


def _running_max(values: torch.Tensor) -> torch.Tensor:
    """Cumulative maximum over the last axis (few levels), in ops every ONNX opset has."""
    columns = [values[..., 0]]
    for j in range(1, values.shape[-1]):
        columns.append(torch.maximum(columns[-1], values[..., j]))
    return torch.stack(columns, dim=-1)


def qlike(y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean QLIKE of variance forecasts exp(m) against realised exp(y) (0 at a perfect forecast)."""
    d = y - m
    return torch.mean(torch.exp(d) - d - 1)


def fz0(loss: torch.Tensor, var: torch.Tensor, es: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """Mean FZ0 joint VaR/ES loss for positive losses; `tail` = 1 - level broadcasts over the last axis."""
    return torch.mean(F.relu(loss - var) / (tail * es) + var / es + torch.log(es) - 1)


class VolLightningModule(L.LightningModule):
    """Losses, metrics and optimiser around a `VolNet`; batches are (windows, y_var, r_std)."""

    def __init__(self, network: VolNet, levels: tuple[float, ...], lr: float = 1e-3,
                 weight_decay: float = 1e-4, tail_weight: float = 1.0):
        super().__init__()
        self.network = network
        self.lr = lr
        self.weight_decay = weight_decay
        self.tail_weight = tail_weight
        self.register_buffer("tail", torch.tensor([1 - level for level in levels]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _losses(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, r = batch
        out = self.network(x)
        m = out[:, 0]
        z = r * torch.exp(-0.5 * m.detach())
        losses = torch.stack([-z, z], dim=1)[:, :, None]  # (batch, side, 1): long loses -z, short +z
        tails = out[:, 1:].reshape(-1, 2, 2, len(self.tail))
        return qlike(y, m), fz0(losses, tails[:, :, 0], tails[:, :, 1], self.tail)

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        variance_loss, tail_loss = self._losses(batch)
        loss = variance_loss + self.tail_weight * tail_loss
        size = len(batch[0])
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{stage}_qlike", variance_loss, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{stage}_fz0", tail_loss, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.network.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def pad(features: np.ndarray, window: int) -> np.ndarray:
    """Prefix window - 1 zero rows (the training mean after scaling), so every row ends a full window."""
    return np.concatenate([np.zeros((window - 1, features.shape[1]), features.dtype), features])


def windows(padded: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """(len(ends), window, features): the rows ending at each position `ends` of the unpadded array."""
    return padded[ends[:, None] + np.arange(window)]


class _Windows(Dataset):
    """Samples (window, y_var, r_std) gathered a whole batch at a time from one asset-padded matrix."""

    def __init__(self, padded: np.ndarray, ends: np.ndarray, targets: np.ndarray, window: int):
        self.padded = torch.from_numpy(padded)
        self.ends = torch.from_numpy(ends)
        self.targets = torch.from_numpy(targets)
        self.offsets = torch.arange(window)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        x = self.padded[self.ends[rows, None] + self.offsets]
        return x, self.targets[rows, 0], self.targets[rows, 1]


class VolDataModule(L.LightningDataModule):
    """Windows of scaled features ending at each origin with a finite target, per asset.

    `frames` maps asset -> scaled `FEATURE_NAMES` (missing = 0) plus targets y_var, r_std. Each
    asset's rows are padded separately, so no window crosses assets. Split by time and by asset, so that
    early stopping measures what a venue sees (a listing the model never trained on, later): one calendar
    cut for all assets, origins in the last `val_fraction` of dates of the `val_assets` share of assets
    (a seeded choice) validate; the other assets' origins up to h days before the cut train, so no
    training target overlaps a validation target. With `val_assets=0` or a single asset, every asset
    validates after the cut (a time split only).
    """

    def __init__(self, frames: dict[str, pd.DataFrame], window: int, horizon: int = 1,
                 batch_size: int = 512, val_fraction: float = 0.15, seed: int = 0, val_assets: float = 0.0):
        super().__init__()
        self.frames = frames
        self.window = window
        self.horizon = horizon
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.val_assets = val_assets

    def validation_assets(self) -> set[str]:
        """Assets whose later rows validate (all of them for a time split only)."""
        names = sorted(self.frames)
        count = int(np.ceil(self.val_assets * len(names)))
        if len(names) < 2 or count == 0:
            return set(names)
        order = np.random.default_rng(self.seed).permutation(len(names))
        return {names[i] for i in order[:min(count, len(names) - 1)]}

    def validation_cut(self) -> pd.Timestamp:
        dates = pd.DatetimeIndex(sorted(set().union(*(f.index for f in self.frames.values()))))
        return dates[int(len(dates) * (1 - self.val_fraction))]

    def setup(self, stage: str | None = None) -> None:
        cut = self.validation_cut()
        last_train = cut - pd.Timedelta(days=self.horizon)
        held_out = self.validation_assets()
        self.grouped = grouped = held_out != set(self.frames)
        blocks, ends, targets, split, offset = [], [], [], [], 0
        for asset, frame in self.frames.items():
            blocks.append(pad(frame[list(FEATURE_NAMES)].to_numpy(np.float32), self.window))
            y = frame[["y_var", "r_std"]].to_numpy(np.float32)
            keep = np.flatnonzero(np.isfinite(y).all(axis=1))
            ends.append(keep + offset)
            targets.append(y[keep])
            dates = frame.index[keep]
            validates, trains = asset in held_out, not (grouped and asset in held_out)
            split.append(np.where((dates >= cut) & validates, 1,
                                  np.where((dates <= last_train) & trains, 0, -1)))  # -1: embargo / unused
            offset += len(blocks[-1])
        padded, ends, targets, split = (np.concatenate(a) for a in (blocks, ends, targets, split))
        self.train_set = _Windows(padded, ends[split == 0], targets[split == 0], self.window)
        self.val_set = _Windows(padded, ends[split == 1], targets[split == 1], self.window)

    def calibration_set(self) -> _Windows | None:
        """Rows the tails are calibrated on: the validation rows (held-out assets after the cut) where the
        split is grouped by asset, else None (a time split alone leaves no asset unseen)."""
        return self.val_set if self.grouped and len(self.val_set) else None

    def _loader(self, data: _Windows, sampler) -> DataLoader:
        # batch_size=None: the sampler yields whole index batches, gathered in one indexing step
        return DataLoader(data, sampler=BatchSampler(sampler, self.batch_size, drop_last=False),
                          batch_size=None, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return self._loader(self.train_set, RandomSampler(self.train_set, generator=generator))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, SequentialSampler(self.val_set))


class _KeepBest(Callback):
    """Keeps the network weights of the epoch with the lowest validation loss, in memory."""

    def __init__(self) -> None:
        self.best = math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: VolLightningModule) -> None:
        value = float(trainer.callback_metrics["val_loss"])
        if value < self.best:
            self.best = value
            self.state = copy.deepcopy(pl_module.network.state_dict())


class _History(Callback):
    """Per-epoch logged metrics (train_/val_ loss, qlike, fz0): the learning curve, logged to MLflow."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: VolLightningModule) -> None:
        self.rows.append({k: float(v) for k, v in trainer.callback_metrics.items()})


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-Trainer banner and the num_workers hint (0 is deliberate: data is in
    memory and batches are gathered in one step) over dozens of walk-forward refits."""
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")  # Lightning's own use of a torch deprecation
            yield
    finally:
        log.setLevel(level)


class NeuralForecaster(GlobalForecaster):
    """Global GRU forecaster of the h-day variance and per-side VaR/ES (see module docstring).

    Training: the first `fit_panel` trains from scratch for up to `max_epochs` with early stopping
    (`patience`) on the validation block and keeps the best epoch's weights. Later calls with the
    same horizon warm-start from the previous weights and train `refit_epochs` epochs on the new
    window (the walk-forward refits then cost seconds, and consecutive windows overlap almost fully).
    The feature scaler is refitted on each training window.

    Threads: `num_threads=1` by default. The GRU's 32-wide matrices gain nothing from a second
    intra-op thread, and OpenMP threads stall when another process holds the other core (a 3-epoch
    fit on 8 assets took 1.7-1.9 s with 1 thread and 4-21 s with 2 on a shared 2-core machine).

    Forecasts: origins with less than `window` rows of history get zero-padded windows (zero is the
    training mean after scaling), so they still get finite forecasts centred on their own level.
    """

    name = "nn"

    def __init__(
        self,
        levels: tuple[float, ...] = (0.975, 0.99),
        window: int = 32,
        hidden: int = 32,
        layers: int = 1,
        max_epochs: int = 20,
        patience: int = 3,
        refit_epochs: int = 2,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        tail_weight: float = 1.0,
        tail_calibration: bool = False,
        batch_size: int = 512,
        val_fraction: float = 0.15,
        val_assets: float = 0.2,
        level_days: int = 66,
        seed: int = 0,
        members: int = 1,
        num_threads: int = 1,
        enable_checkpointing: bool = False,
        enable_progress_bar: bool = False,
        logger: bool = False,
    ):
        self.levels = levels
        self.window = window
        self.hidden = hidden
        self.layers = layers
        self.max_epochs = max_epochs
        self.patience = patience
        self.refit_epochs = refit_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.tail_weight = tail_weight
        self.tail_calibration = tail_calibration  # scale each tail output to its coverage on unseen assets
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.val_assets = val_assets
        self.level_days = level_days
        self.seed = seed
        self.members = members  # > 1: an ensemble of networks from seeds seed, seed + 1, ... (`VolEnsemble`)
        self.num_threads = num_threads
        self.enable_checkpointing = enable_checkpointing
        self.enable_progress_bar = enable_progress_bar
        self.logger = logger

    def _warm(self, levels: tuple[float, ...], horizon: int) -> bool:
        return hasattr(self, "network_") and self.levels_ == levels and self.horizon_ == horizon

    def _scaled_frames(self, trains: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
        frames = {a: training_frame(d, self.horizon_, self.feature_spec_) for a, d in trains.items()}
        names = list(FEATURE_NAMES)
        self.scaler_ = StandardScaler().fit(np.concatenate([f[names].to_numpy() for f in frames.values()]))
        for frame in frames.values():
            frame[names] = standardize(self.scaler_, frame[names].to_numpy())
        return frames

    def _trainer(self, epochs: int, *callbacks: Callback) -> L.Trainer:
        return L.Trainer(
            accelerator="cpu", devices=1, deterministic=True, max_epochs=epochs,
            callbacks=[EarlyStopping("val_loss", patience=self.patience), *callbacks],
            enable_checkpointing=self.enable_checkpointing, logger=self.logger,
            enable_progress_bar=self.enable_progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
        )

    def fit_panel(self, trains: dict[str, pd.DataFrame], horizon: int = 1) -> "NeuralForecaster":
        levels = check_levels(self.levels)
        if self.members < 1 or (self.members > 1 and self.tail_calibration):
            raise ValueError(f"members: {self.members!r}; at least 1, and 1 with tail_calibration (its held-out "
                             "assets are another member's training assets)")
        warm = self._warm(levels, horizon)
        torch.set_num_threads(self.num_threads)
        torch.use_deterministic_algorithms(True)
        if not warm:
            self.levels_, self.horizon_ = levels, horizon
            self.feature_spec_ = FeatureSpec(level_days=self.level_days)
        frames = self._scaled_frames(trains)
        networks = [] if not warm else list(self.network_.members) if self.members > 1 else [self.network_]
        fits = []
        for k in range(self.members):  # each member: its seed, then (first fit) its weights, then its training
            L.seed_everything(self.seed + k, workers=True, verbose=False)
            if not warm:
                networks.append(VolNet(len(FEATURE_NAMES), len(levels), self.hidden, self.layers))
            fits.append(self._train(networks[k], frames, warm, self.seed + k))
        if not warm:
            self.network_ = networks[0] if self.members == 1 else VolEnsemble(networks)
        self.network_.eval()
        data, self.best_val_loss_, self.epochs_, self.history_ = fits[0]
        calibration = data.calibration_set() if self.tail_calibration else None
        self.tail_factors_ = self._calibrate_tails(calibration)
        return self

    def _train(self, network: VolNet, frames: dict[str, pd.DataFrame], warm: bool,
               seed: int) -> tuple[VolDataModule, float, int, list]:
        """Train one network on the scaled frames, validation split by `seed`, keeping its best epoch's
        weights: (its data module, best validation loss, epochs, history)."""
        data = self._data_module(frames, seed)
        network.tail_scale.fill_(1.0)  # train (and warm-refit) the uncalibrated tails
        network.train()
        module = VolLightningModule(network, self.levels_, self.lr, self.weight_decay, self.tail_weight)
        keep_best, history = _KeepBest(), _History()
        with _quiet_lightning():
            trainer = self._trainer(self.refit_epochs if warm else self.max_epochs, keep_best, history)
            trainer.fit(module, datamodule=data)
        network.load_state_dict(keep_best.state)
        network.eval()
        return data, keep_best.best, trainer.current_epoch, history.rows

    def _data_module(self, frames: dict[str, pd.DataFrame], seed: int) -> VolDataModule:
        """The windows of scaled frames and their split by `seed` (set up by the trainer)."""
        return VolDataModule(frames, self.window, self.horizon_, self.batch_size, self.val_fraction, seed,
                             self.val_assets)

    def _data(self, trains: dict[str, pd.DataFrame]) -> VolDataModule:
        """The first member's data module; refits the feature scaler on `trains`."""
        return self._data_module(self._scaled_frames(trains), self.seed)

    def _calibrate_tails(self, rows: _Windows | None, chunk: int = 8192) -> dict[str, list[float]]:
        """Scale each tail output (VaR and ES of a side and level) by the factor >= 1 that makes its VaR
        exceeded on `rows` as often as its level says (`coverage_factor`, as the GBM's tail boosters), with
        the losses z_loss of the module docstring; written into the network's `tail_scale`. The rows are
        the held-out assets' after the validation cut: out of fold by asset and time, though they also
        chose the early-stopping epoch. In-sample tails fit the training days' extremes, and a new asset
        breaches them more often. No rows (calibration off, a time split): factors 1."""
        factors = {side: [1.0] * len(self.levels_) for side in SIDES}
        if rows is not None:
            parts = [rows[list(range(i, min(i + chunk, len(rows))))] for i in range(0, len(rows), chunk)]
            with torch.no_grad():
                out = torch.cat([self.network_(x) for x, _, _ in parts]).double().numpy()
            r_std = torch.cat([r for _, _, r in parts]).double().numpy()
            z = r_std * np.exp(-0.5 * out[:, 0])
            var = out[:, 1:].reshape(-1, 2, 2, len(self.levels_))[:, :, 0]  # (rows, side, level)
            for i, (side, losses) in enumerate(zip(SIDES, (-z, z))):
                factors[side] = [coverage_factor(losses, var[:, i, j], level) for j, level in enumerate(self.levels_)]
        self.network_.tail_scale.copy_(torch.tensor([factors[side] for side in SIDES]))
        return factors

    def predict_standardized(self, history: pd.DataFrame, origins: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs (columns as `output_columns`) at each origin and the log level variance
        level_t + log h there; only rows of `history` up to each origin enter its window."""
        frame = feature_frame(history, self.feature_spec_)
        x = pad(standardize(self.scaler_, frame[list(FEATURE_NAMES)].to_numpy()), self.window)
        ends = frame.index.get_indexer(origins)
        out = self.predict_raw(windows(x, ends, self.window)).astype(float)
        return out, horizon_level(frame["level"].to_numpy()[ends], self.horizon_)

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Network outputs (`output_columns`) for standardized float32 windows (n, window, features)."""
        with torch.no_grad():
            return self.network_(torch.from_numpy(x)).numpy()

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]) -> Forecast:
        require_levels(self.levels_, levels)
        out, base = self.predict_standardized(history, origins)
        return Forecast.from_raw(origins, self.horizon_, out, base, self.levels_)

    def save(self, path: str | Path) -> None:
        """Parameters, network weights, scaler statistics and feature spec, loadable with
        `torch.load(weights_only=True)` (no pickled code). The logger is a run-time choice, not saved."""
        torch.save({
            "params": {k: v for k, v in self.get_params().items() if k != "logger"},
            "state_dict": self.network_.state_dict(),
            "scaler": {"mean": torch.from_numpy(self.scaler_.mean_), "scale": torch.from_numpy(self.scaler_.scale_)},
            "feature_spec": asdict(self.feature_spec_),
            "horizon": self.horizon_,
        }, path)

    @classmethod
    def load(cls, path: str | Path) -> "NeuralForecaster":
        saved = torch.load(path, weights_only=True)
        model = cls(**saved["params"])
        model.levels_, model.horizon_ = check_levels(model.levels), saved["horizon"]
        model.feature_spec_ = FeatureSpec(**saved["feature_spec"])
        networks = [VolNet(len(FEATURE_NAMES), len(model.levels_), model.hidden, model.layers)
                    for _ in range(model.members)]
        model.network_ = networks[0] if model.members == 1 else VolEnsemble(networks)
        state = saved["state_dict"]
        state.setdefault("tail_scale", torch.ones(2, len(model.levels_)))  # saved before the tail calibration
        model.network_.load_state_dict(state)
        model.network_.eval()
        model.scaler_ = fitted_scaler(saved["scaler"]["mean"].numpy(), saved["scaler"]["scale"].numpy())
        return model
