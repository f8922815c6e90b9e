"""scripts/measure_tolerances.py measures the error that torchconv.testing.TOLERANCES bounds."""

from pathlib import Path

import torch

from torchconv.testing import scaled_error
from script_module import load_script

_PATH = Path(__file__).resolve().parent.parent / "scripts" / "measure_tolerances.py"




def test_compare_reports_the_scaled_error_of_the_tolerances():
    compare = load_script(_PATH).compare
    small = (torch.tensor([0.25, -0.5]), torch.tensor([0.25, -0.25]))  # max|torch| < 1: scale 1
    large = (torch.tensor([40.0, 3.0]), torch.tensor([39.5, 3.0]))  # scale 39.5
    worst_abs, worst_scaled = compare([small, large])
    assert worst_abs == 0.5
    assert worst_scaled == max(scaled_error(*small), scaled_error(*large)) == 0.25


def test_nan_in_one_result_only_is_an_infinite_error():
    _, worst_scaled = load_script(_PATH).compare([(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0]))])
    assert worst_scaled == float("inf")


def test_run_returns_the_six_columns_for_float32():
    module = load_script(_PATH)
    row = module.run(lambda x, w: torch.nn.functional.conv2d(x, w, padding=1),
                     lambda x, w: torch.nn.functional.conv2d(x, w, padding=1),
                     ((1, 2, 5, 5), (3, 2, 3, 3)), torch.float32, True)
    assert len(row) == 6 and row[1] == 0.0 and row[3] == 0.0
