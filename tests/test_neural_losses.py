"""The GRU's losses in numbers, its sides and its members' seeds, without training (session 29's mutation audit:
each test fails on a change the suite let through)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from volmargin.features.learned import FEATURE_NAMES

LEVELS = (0.975, 0.99)


def test_qlike_and_fz0_are_the_documented_losses():
    """QLIKE exp(y - m) - (y - m) - 1 (a forecast below the realised variance costs more than one above by the
    same log distance); FZ0 (z - v)_+ / (a e) + v / e + log e - 1 with a the tail probability."""
    from volmargin.models.neural import fz0, qlike

    y = torch.tensor([math.log(2.0)])
    assert float(qlike(y, torch.zeros(1))) == pytest.approx(2 - math.log(2) - 1, rel=1e-6)
    assert float(qlike(torch.zeros(1), y)) == pytest.approx(0.5 + math.log(2) - 1, rel=1e-6)
    loss, var, es = torch.tensor([3.0, 1.0]), torch.tensor([2.0, 2.0]), torch.tensor([2.5, 2.5])
    expected = np.mean([1 / (0.01 * 2.5), 0.0]) + 2 / 2.5 + math.log(2.5) - 1
    assert float(fz0(loss, var, es, torch.tensor(0.01))) == pytest.approx(expected, rel=1e-6)


def test_the_long_tail_learns_from_falls_and_the_short_tail_from_rises():
    """_losses: the long side's FZ0 reads the loss -z, the short side's +z, each level at its own tail
    probability 1 - level, and the step's loss is QLIKE + tail_weight x FZ0."""
    from volmargin.models.neural import VolLightningModule, VolNet, fz0, qlike

    torch.manual_seed(0)
    network = VolNet(len(FEATURE_NAMES), n_levels=len(LEVELS), hidden=4)
    with torch.no_grad():  # a constant output: m = 0, thin long tails (softplus(0) steps), fat short ones
        network.head[-1].weight.zero_()
        network.head[-1].bias.zero_()
        network.head[-1].bias[1 + 2 * len(LEVELS):] = 3.0  # the short side's VaR and ES steps
    module = VolLightningModule(network, LEVELS, tail_weight=0.5)
    np.testing.assert_allclose(module.tail.numpy(), [0.025, 0.01], rtol=1e-6)
    x = torch.zeros(3, 4, len(FEATURE_NAMES))
    y, r = torch.tensor([0.1, -0.2, 0.0]), torch.tensor([-4.0, 0.5, 1.0])  # a fall of 4 standard deviations
    with torch.no_grad():
        out = network(x)
    tails = out[:, 1:].reshape(-1, 2, 2, len(LEVELS))
    variance_loss, tail_loss = (v.detach() for v in module._losses((x, y, r)))
    z = r * torch.exp(-0.5 * out[:, 0])
    tail = torch.tensor([0.025, 0.01])
    expected = (fz0(-z[:, None], tails[:, 0, 0], tails[:, 0, 1], tail)
                + fz0(z[:, None], tails[:, 1, 0], tails[:, 1, 1], tail)) / 2
    assert float(tail_loss) == pytest.approx(float(expected), rel=1e-6)
    swapped = (fz0(z[:, None], tails[:, 0, 0], tails[:, 0, 1], tail)
               + fz0(-z[:, None], tails[:, 1, 0], tails[:, 1, 1], tail)) / 2
    assert float(swapped) != pytest.approx(float(expected), rel=1e-3)  # the sides differ: the test has teeth
    assert float(variance_loss) == pytest.approx(float(qlike(y, out[:, 0])), rel=1e-6)
    module.log = lambda *args, **kwargs: None
    step = float(module._step((x, y, r), "train").detach())
    assert step == pytest.approx(float(variance_loss + 0.5 * tail_loss), rel=1e-6)


def test_each_ensemble_member_gets_its_own_seed_for_its_weights_and_its_validation_assets(monkeypatch):
    """members=3: member k is initialised under seed + k and splits its held-out assets with seed + k (no
    training here: the training step is replaced by a recorder)."""
    from volmargin.data import synthetic_market
    from volmargin.features.realized import daily_measures
    from volmargin.models.neural import NeuralForecaster, VolNet

    panel = {a: daily_measures(b).iloc[:200] for a, b in synthetic_market(n_assets=5, days=200, seed=1).items()}
    seen = []

    def record(self, network, frames, warm, seed):
        seen.append((seed, {k: v.clone() for k, v in network.state_dict().items()},
                     self._data_module(frames, seed).validation_assets()))
        return None, 0.0, 0, []

    monkeypatch.setattr(NeuralForecaster, "_train", record)
    NeuralForecaster(window=4, hidden=4, members=3, seed=7, val_assets=0.4).fit_panel(panel)
    assert [s for s, _, _ in seen] == [7, 8, 9]
    for k, (_, state, assets) in enumerate(seen):
        torch.manual_seed(7 + k)
        fresh = VolNet(len(FEATURE_NAMES), len(LEVELS), 4).state_dict()
        assert all(torch.equal(fresh[name], state[name]) for name in fresh), k
    assert len({frozenset(a) for _, _, a in seen}) > 1  # the held-out assets move with the seed


def test_the_tail_loss_sends_no_gradient_to_the_variance_output():
    """z_loss uses the detached variance forecast: FZ0's gradient reaches the tail outputs, never m's bias."""
    from volmargin.models.neural import VolLightningModule, VolNet

    torch.manual_seed(0)
    network = VolNet(len(FEATURE_NAMES), n_levels=len(LEVELS), hidden=4)
    module = VolLightningModule(network, LEVELS)
    x = torch.randn(16, 4, len(FEATURE_NAMES))
    y, r = torch.randn(16), 3 * torch.randn(16)
    _, tail_loss = module._losses((x, y, r))
    tail_loss.backward()
    bias = network.head[-1].bias.grad
    assert float(bias[0]) == 0.0 and float(bias[1:].abs().sum()) > 0
