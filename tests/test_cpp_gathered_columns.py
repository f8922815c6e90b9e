"""The C++ CPU kernels' im2col by gathers (csrc/cpu/im2col_gather.h), against
torch in float64.

float32 planes of more than 64 values with at most 64 window positions, at
a stride other than 1 or with windows rows narrower than the plane's, are
turned into columns by one masked gather per tap and 16 window positions;
the NCHW GEMM kernels (csrc/cpu/conv/gemm_nchw.h) use it for conv2d and
its weight gradient where the level has AVX-512. The shapes here cover
that rule: a transposed convolution's 14 x 14 input gradient at stride 2,
odd and rectangular planes, the most window positions and one past them,
stride 3, stride 1 without padding, dilation with groups, padding wider
than the kernel's reach, and batches that fold whole samples. bfloat16
runs the same shapes through the other im2col paths.
"""

import pytest
import torch

from conv2d_against_float64 import assert_conv2d_shape_matches_float64, conv2d_shape_id
from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (batch, in channels, out channels, plane (h, w), kernel (h, w), stride, padding, dilation, groups)
SHAPES = [
    (4, 8, 16, (14, 14), (3, 3), 2, 1, 1, 1),  # 7 x 7 window positions
    (4, 8, 16, (15, 13), (3, 3), 2, 0, 1, 1),  # odd, rectangular: 7 x 6
    (4, 8, 8, (16, 16), (4, 4), 2, 1, 1, 1),  # 8 x 8: the most positions
    (4, 8, 8, (18, 16), (4, 4), 2, 1, 1, 1),  # 9 x 8: im2col.h's rows
    (3, 6, 8, (20, 20), (5, 5), 3, 2, 1, 1),  # stride 3
    (4, 8, 8, (10, 10), (3, 3), 1, 0, 1, 1),  # stride 1, windows rows narrower than the plane's
    (4, 8, 8, (12, 12), (3, 3), 2, 2, 2, 2),  # dilation, groups
    (4, 4, 8, (9, 9), (2, 2), 2, 2, 1, 1),  # padding wider than the kernel's reach
    (20, 4, 8, (9, 9), (3, 3), 2, 1, 1, 1),  # more blocks than threads
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=conv2d_shape_id)
def test_conv2d_and_weight_gradient_of_gathered_columns(shape, dtype):
    assert_conv2d_shape_matches_float64(shape, dtype)
