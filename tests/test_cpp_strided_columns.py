"""im2col's rows of stride-2 windows (csrc/cpu/im2col.h, copy_every_other),
against torch in float64.

With AVX-512 a stride-2 row of the column matrix takes every other value of
a plane row sixteen at a time (bfloat16 by narrowing 32-bit lanes, float32
by a permute), the last vector under masks that read nothing past the row's
last window. The shapes put the windows rows' inside runs at every length
around those sixteen (plane widths 1 to 69), with the padding clipping
either end, dilations and kernels of 1 to 4 columns, through the NCHW GEMM
kernels (8 output channels: no tiled kernel) of conv2d and its weight
gradient, in float32 and bfloat16, at every capability level.
"""

import pytest
import torch

from conv2d_against_float64 import assert_conv2d_matches_float64
from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (plane width, kernel width, padding, dilation)
ROWS = [(1, 1, 0, 1), (2, 3, 1, 1), (15, 3, 1, 1), (16, 1, 0, 1), (17, 3, 0, 1), (31, 4, 2, 1),
        (32, 3, 1, 1), (33, 3, 1, 2), (34, 2, 0, 1), (63, 3, 1, 1), (64, 3, 2, 2), (69, 3, 1, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"w{r[0]}-k{r[1]}-p{r[2]}-d{r[3]}")
def test_stride_two_columns(row, dtype):
    width, kernel, padding, dilation = row
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 5, width), torch.randn(8, 3, 3, kernel)
    kwargs = dict(stride=2, padding=(1, padding), dilation=(1, dilation))
    assert_conv2d_matches_float64(x, w, kwargs, dtype)
