"""torchconv.testing: the tolerance table, the scaled error, the memory-format
helpers, and assert_close_to_torch passing torch's own results and failing,
with a message that names the difference, on each kind of disagreement."""

import doctest

import pytest
import torch
import torch.nn.functional as F

import torchconv
from torchconv import testing
from torchconv.testing import (
    MEMORY_FORMATS,
    TOLERANCES,
    assert_close_to_torch,
    error_scale,
    memory_format_flags,
    scaled_error,
    tolerance,
)

CL = torch.channels_last


def test_is_public_and_documented():
    assert torchconv.testing is testing
    assert set(testing.__all__) == {
        "TOLERANCES", "MEMORY_FORMATS", "tolerance", "error_scale", "scaled_error", "memory_format_flags",
        "assert_close_to_torch",
    }
    # The module's examples (a user's own op validated against torch included) run as written.
    result = doctest.testmod(testing, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


# ------------------------------------------------------------------ the table


def test_tolerance_table_is_the_documented_one():
    """docs/tolerances.md's table: float32/complex64 1e-5, float64/complex128 1e-13,
    half precision two units in the last place of the scale."""
    assert TOLERANCES == {
        torch.float16: 2 * 2**-10,
        torch.bfloat16: 2 * 2**-7,
        torch.float32: 1e-5,
        torch.float64: 1e-13,
        torch.complex64: 1e-5,
        torch.complex128: 1e-13,
    }
    assert tolerance(torch.float32) == 1e-5
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
        assert tolerance(dtype) == 0.0
    with pytest.raises(ValueError, match=r"no tolerance for torch.float8_e4m3fn .* pass atol"):
        tolerance(torch.float8_e4m3fn)


# ------------------------------------------------------------------ scaled error


def test_error_scale_is_at_least_one_and_ignores_non_finite():
    assert error_scale(torch.tensor([0.25, -0.5])) == 1.0
    assert error_scale(torch.tensor([3.0, -8.0, float("inf"), float("nan")])) == 8.0
    assert error_scale(torch.tensor([3 + 4j])) == 5.0
    assert error_scale(torch.empty(0)) == 1.0


def test_scaled_error():
    expected = torch.tensor([0.5, -20.0])
    assert scaled_error(torch.tensor([0.5, -19.75]), expected) == 0.25 / 20
    assert scaled_error(torch.tensor([0.25, 0.5]), torch.tensor([0.5, 0.5])) == 0.25  # scale 1 below 1
    assert scaled_error(expected, expected) == 0.0
    # Computed in float64: a bfloat16 difference is not rounded to bfloat16.
    one_ulp_apart = torch.tensor([1.0078125], dtype=torch.bfloat16), torch.tensor([1.0], dtype=torch.bfloat16)
    assert scaled_error(*one_ulp_apart) == 2**-7


def test_scaled_error_of_non_finite_values():
    inf, nan = float("inf"), float("nan")
    assert scaled_error(torch.tensor([inf, nan, 1.0]), torch.tensor([inf, nan, 1.0])) == 0.0
    assert scaled_error(torch.tensor([nan, 1.0]), torch.tensor([0.0, 1.0])) == inf
    assert scaled_error(torch.tensor([inf]), torch.tensor([-inf])) == inf
    with pytest.raises(ValueError, match=r"shapes differ: \(2,\) and \(3,\)"):
        scaled_error(torch.zeros(2), torch.zeros(3))


# ------------------------------------------------------------------ memory formats


def test_memory_format_flags():
    x = torch.empty(2, 3, 4, 5)
    assert MEMORY_FORMATS == (torch.contiguous_format, torch.channels_last)
    assert memory_format_flags(x) == (True, False)
    assert memory_format_flags(x.contiguous(memory_format=CL)) == (False, True)
    assert memory_format_flags(x[:, :, :, ::2]) == (False, False)
    assert memory_format_flags(torch.empty(2, 1, 4, 5)) == (True, True)  # one channel: both at once
    assert memory_format_flags(torch.empty(3, 4, 5).permute(1, 2, 0)) == (False, False)
    assert memory_format_flags(torch.empty(7)) == (True, False)


# ------------------------------------------------------------------ passes on torch's results


@pytest.mark.parametrize("memory_format", MEMORY_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64], ids=str)
def test_torchs_own_result_passes(dtype, memory_format):
    x = torch.randn(2, 3, 7, 6, dtype=dtype).contiguous(memory_format=memory_format)
    w = torch.randn(4, 3, 3, 3, dtype=dtype)
    expected = F.conv2d(x, w, padding=1)
    assert_close_to_torch(expected.clone(), expected)
    assert_close_to_torch(torchconv.conv2d(x, w, padding=1), expected)


def test_max_pool2d_values_and_indices_pass():
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=CL)
    expected = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert_close_to_torch(torchconv.max_pool2d(x, 3, 2, 1, return_indices=True), expected)


def test_default_tolerance_is_scaled_and_absolute():
    """rtol 0, atol c(dtype) * max(1, max|expected|): every element may be off by the same amount."""
    expected = torch.tensor([0.0, 1e-3, 100.0], dtype=torch.float64)
    at_tolerance = expected + torch.tensor([1e-11, -1e-11, 0.0], dtype=torch.float64)  # 1e-13 * 100
    assert_close_to_torch(at_tolerance, expected)
    beyond = expected + torch.tensor([1.01e-11, 0.0, 0.0], dtype=torch.float64)
    message = r"differ by more than atol 1e-11 = 1e-13 \(torch.float64 tolerance\) \* 100"
    with pytest.raises(AssertionError, match=message):
        assert_close_to_torch(beyond, expected)


def test_half_precision_within_two_units_of_the_scale():
    expected = torch.tensor([0.0, 2.0, 4.0], dtype=torch.bfloat16)
    assert_close_to_torch(torch.tensor([0.03125, 2.0, 4.0], dtype=torch.bfloat16), expected)  # 2 * 2^-7 * 4 = 0.0625
    with pytest.raises(AssertionError, match=r"values not close to torch's: 1 of 3 elements"):
        assert_close_to_torch(torch.tensor([0.0, 2.0, 4.125], dtype=torch.bfloat16), expected)


def test_explicit_tolerance_overrides_the_table():
    expected = torch.tensor([1.0, 10.0])
    actual = torch.tensor([1 + 2**-7, 10 + 2**-4])  # exact in float32
    with pytest.raises(AssertionError, match="values not close"):
        assert_close_to_torch(actual, expected)
    assert_close_to_torch(actual, expected, rtol=1e-2, atol=0)
    assert_close_to_torch(actual, expected, atol=0.1)
    with pytest.raises(AssertionError, match=r"1 of 2 elements .* atol 0.01, rtol 0.001; .* at index \(1,\)"):
        assert_close_to_torch(actual, expected, rtol=1e-3, atol=1e-2)


def test_nan_and_infinities():
    nan, inf = float("nan"), float("inf")
    expected = torch.tensor([nan, inf, -inf, 1.0], dtype=torch.float64)
    assert_close_to_torch(expected.clone(), expected)
    with pytest.raises(AssertionError, match=r"1 of 4 elements .* at index \(0,\)"):
        assert_close_to_torch(expected.clone(), expected, equal_nan=False)
    # Only equality passes where torch's value is infinite, whatever the tolerance.
    with pytest.raises(AssertionError, match=r"at index \(1,\) \(1e\+30 vs torch's inf\)"):
        assert_close_to_torch(torch.tensor([nan, 1e30, -inf, 1.0], dtype=torch.float64), expected, rtol=1.0, atol=1.0)


def test_strides_of_empty_tensors_are_not_compared():
    expected = torch.empty(0, 4, 3, 3)
    assert_close_to_torch(torch.empty(0, 4, 3, 3).as_strided((0, 4, 3, 3), (1, 1, 1, 1)), expected)


def test_sequences_and_none():
    a, b = torch.ones(2), torch.zeros(3)
    assert_close_to_torch([a, None], (a.clone(), None))
    with pytest.raises(AssertionError, match=r"^grads\[1\]: None, torch's is a tensor$"):
        assert_close_to_torch([a, None], [a, b], msg="grads")
    with pytest.raises(AssertionError, match=r"^grads\[0\]: a tensor, torch's is None$"):
        assert_close_to_torch([a], [None], msg="grads")
    with pytest.raises(AssertionError, match=r"^2 results, torch gives 1$"):
        assert_close_to_torch([a, b], [a])
    with pytest.raises(AssertionError, match=r"^out: a Tensor, torch's is a tuple of 2$"):
        assert_close_to_torch(a, (a, b), msg="out")


# ------------------------------------------------------------------ fails, naming what differs


def _conv(memory_format=torch.contiguous_format, dtype=torch.float32):
    x = torch.randn(2, 3, 7, 6, dtype=dtype).contiguous(memory_format=memory_format)
    return F.conv2d(x, torch.randn(4, 3, 3, 3, dtype=dtype), padding=1)


def test_fails_on_a_wrong_value():
    expected = _conv()
    actual = expected.clone()
    actual[1, 2, 3, 4] += 1e-3
    with pytest.raises(
        AssertionError,
        match=r"^output: values not close to torch's: 1 of 336 elements \(0\.3%\) differ by more than atol .* "
        r"the greatest difference is 0\.001 at index \(1, 2, 3, 4\) .* scaled error",
    ):
        assert_close_to_torch(actual, expected, msg="output")


def test_fails_on_a_wrong_dtype():
    expected = _conv()
    with pytest.raises(AssertionError, match=r"^dtype torch\.float64 differs from torch's torch\.float32$"):
        assert_close_to_torch(expected.double(), expected)


def test_fails_on_a_wrong_shape():
    expected = _conv()
    with pytest.raises(AssertionError, match=r"shape \(2, 4, 7, 5\) differs from torch's \(2, 4, 7, 6\)"):
        assert_close_to_torch(expected[..., :5], expected)


def test_fails_on_a_wrong_device():
    expected = _conv()
    with pytest.raises(AssertionError, match=r"device meta differs from torch's cpu"):
        assert_close_to_torch(expected.to("meta"), expected)


def test_fails_on_a_wrong_memory_format():
    expected = _conv(CL)
    with pytest.raises(
        AssertionError,
        match=r"^grad input: memory format \(is_contiguous, is_channels_last\) \(True, False\) differs from "
        r"torch's \(False, True\); strides \(168, 42, 6, 1\) vs torch's \(168, 1, 24, 4\)$",
    ):
        assert_close_to_torch(expected.contiguous(), expected, msg="grad input")
    assert_close_to_torch(expected.contiguous(), expected, check_memory_format=False, check_strides=False)


def test_fails_on_wrong_strides():
    """(N, C, 1, 1) is contiguous in both formats whatever its strides; torch's are
    (C, 1, C, C) after a channels_last input, and the next op's layout depends on them."""
    expected = F.adaptive_avg_pool2d(torch.randn(2, 4, 3, 3).contiguous(memory_format=CL), 1)
    assert expected.stride() == (4, 1, 4, 4)
    actual = expected.clone(memory_format=torch.contiguous_format)
    assert memory_format_flags(actual) == memory_format_flags(expected) == (True, True)
    with pytest.raises(AssertionError, match=r"^strides \(4, 1, 1, 1\) differ from torch's \(4, 1, 4, 4\)$"):
        assert_close_to_torch(actual, expected)
    assert_close_to_torch(actual, expected, check_strides=False)


def test_fails_on_an_index_off_by_one():
    x = torch.randn(1, 2, 6, 6)
    expected = F.max_pool2d(x, 2, return_indices=True)
    values, indices = (t.clone() for t in expected)
    indices[0, 1, 2, 0] += 1
    wrong, right = indices[0, 1, 2, 0].item(), expected[1][0, 1, 2, 0].item()
    with pytest.raises(
        AssertionError,
        match=r"^max_pool2d\[1\]: 1 of 18 elements differ from torch's \(integers must be equal\); "
        rf"the first at index \(0, 1, 2, 0\): {wrong} vs torch's {right}$",
    ):
        assert_close_to_torch((values, indices), expected, msg="max_pool2d")
    # No tolerance makes integers close: an index is right or wrong.
    with pytest.raises(AssertionError, match="integers must be equal"):
        assert_close_to_torch(indices, expected[1], atol=10)
