"""Parity must refuse every kind of wrong graph: small errors, errors in the tail columns only, NaN outputs,
and a GBM graph without the non-crossing max over levels."""
import json

import numpy as np
import pytest

from volmargin.data import synthetic_market
from volmargin.export import ExportError, check_parity, parity_inputs, reference_outputs, to_onnx
from volmargin.features.realized import daily_measures
from volmargin.models import make_forecaster

TINY_GBM = {"n_estimators": 30, "tail_estimators": 20, "tail_calibration": False, "smearing": "global"}


@pytest.fixture(scope="module")
def gbm_case():
    panel = {a: daily_measures(b) for a, b in synthetic_market(n_assets=3, days=700, seed=1).items()}
    model = make_forecaster("gbm", **TINY_GBM).fit_panel({a: d.iloc[:450] for a, d in panel.items()})
    x = parity_inputs(model, panel, rows=256)
    return model, panel, x, to_onnx(model)


def test_parity_refuses_an_error_of_ten_times_its_tolerance(gbm_case):
    model, _, x, proto = gbm_case
    reference = reference_outputs(model, x)
    check_parity(proto, reference, x)
    with pytest.raises(ExportError, match="parity check failed"):
        check_parity(proto, reference * (1 + 1e-4), x)  # 1e-4 relative: 10x the 1e-5 limit


def test_parity_checks_every_output_column_and_refuses_nan(gbm_case):
    model, _, x, proto = gbm_case
    reference = reference_outputs(model, x)
    for column in range(1, reference.shape[1]):  # VaR / ES columns, not only the variance
        wrong = reference.copy()
        wrong[:, column] *= 1.01
        with pytest.raises(ExportError, match="parity check failed"):
            check_parity(proto, wrong, x)
    wrong = reference.copy()
    wrong[0, 0] = np.nan  # a NaN anywhere is a failure, not a pass
    with pytest.raises(ExportError, match="parity check failed"):
        check_parity(proto, wrong, x)


def test_the_gbm_graph_keeps_the_tails_non_crossing(gbm_case):
    """Boosters that cross everywhere (the 97.5% one above the 99% one): the library's running max over
    levels makes both VaRs the larger, and the exported graph must do the same."""
    import copy

    model, _, x, _ = gbm_case
    crossed = copy.deepcopy(model)
    crossed.quantile_models_ = {side: boosters[::-1] for side, boosters in crossed.quantile_models_.items()}
    reference = reference_outputs(crossed, x)
    assert (reference[:, 1] == reference[:, 2]).all()  # long VaR 97.5% == 99% after the running max
    check_parity(to_onnx(crossed), reference, x)


def test_a_bundle_whose_golden_self_test_fails_never_appears(gbm_case, tmp_path, monkeypatch):
    """The runtime's self-test runs on the staging folder before the rename: a golden set the bundle does
    not reproduce stops the export and leaves no version behind."""
    import volmargin.export as export

    model, panel, _, _ = gbm_case
    plain = export.golden_set

    def wrong_golden(*args):
        golden = plain(*args)
        return {**golden, "variance": golden["variance"] * 1.01}

    monkeypatch.setattr(export, "golden_set", wrong_golden)
    with pytest.raises(Exception, match="golden self-test failed"):
        export.write_bundle(model, panel, tmp_path)
    assert not (tmp_path / "gbm" / "1").exists()
    assert not [p for p in (tmp_path / "gbm").iterdir() if not p.name.endswith(".lock")]


def test_a_bundle_appears_with_its_calibration_set_already_beside_it(gbm_case, tmp_path, monkeypatch):
    """Session 30's red team: a run killed between the bundle's rename and its calibration set left a bundle no
    service could price with. The set is written (against the staging folder: the same manifest) first."""
    import os
    from pathlib import Path

    import volmargin.calibration.parameters as parameters
    import volmargin.export as export
    from volmargin_serving.calibration import calibration_beside

    model, panel, _, _ = gbm_case
    events, rename = [], os.rename

    def write_set(document, bundle, target):
        events.append(("set", Path(bundle).name, Path(target)))
        Path(target).write_text(json.dumps(document))
        return Path(target)

    def renamed(source, target):
        events.append(("rename", Path(source).name, Path(target)))
        return rename(source, target)

    monkeypatch.setattr(parameters, "write_parameter_set", write_set)
    monkeypatch.setattr(export.os, "rename", renamed)
    bundle = export.write_bundle(model, panel, tmp_path, calibration={"records": []})
    kinds = [(kind, target) for kind, _, target in events]
    assert kinds == [("set", calibration_beside(bundle)), ("rename", bundle)]
    assert events[0][1].endswith(".staging") and json.loads(calibration_beside(bundle).read_text()) == {"records": []}
