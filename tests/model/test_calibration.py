"""Temperature scaling."""

from __future__ import annotations

import numpy as np
import torch

from mics_core.metrics import expected_calibration_error
from mics_core.model.calibration import apply_temperature, fit_temperature


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    generator = torch.Generator().manual_seed(0)
    n, k = 2000, 4
    target = torch.randint(0, k, (n,), generator=generator)
    logits = torch.randn(n, k, generator=generator)
    logits[torch.arange(n), target] += 1.0  # about 60 % accurate
    overconfident = torch.softmax(logits * 4, dim=1)  # then made far too sure
    held_out, test = slice(0, 1000), slice(1000, None)
    temperature = fit_temperature(overconfident[held_out], target[held_out])
    assert temperature > 2
    before = expected_calibration_error(overconfident[test].numpy(), target[test].numpy())
    after = expected_calibration_error(
        apply_temperature(overconfident[test], temperature).numpy(), target[test].numpy()
    )
    assert after < before / 3
    assert np.array_equal(apply_temperature(overconfident, temperature).argmax(1), overconfident.argmax(1))


def test_no_held_out_data_means_no_change():
    assert fit_temperature(torch.empty(0, 3), torch.empty(0, dtype=torch.long)) == 1.0
