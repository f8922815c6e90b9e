"""The C++ CPU kernels' im2col of small planes by register permutes
(csrc/cpu/im2col_small.h), against torch in float64.

Planes of at most 64 values (two AVX-512 vectors of bfloat16, four of
float32) with at most 64 window positions are turned into columns by
permutes, a tap and a vector at a time, the padding zeroed by a mask; the
NCHW GEMM kernels (csrc/cpu/conv/gemm_nchw.h) use it for conv2d and its
weight gradient in float32 and bfloat16 where the level has AVX-512. The
shapes here cover every side of that rule: planes from 1 x 1 to just past
64 values, with the window positions in one vector or several, strides,
padding wider than a kernel's reach, dilation, rectangular planes and
kernels, groups, and batches that fold whole samples and that do not.
"""

import pytest
import torch

from conv2d_against_float64 import assert_conv2d_shape_matches_float64, conv2d_shape_id
from cpp_kernel_marks import CPP_KERNEL_MARKS

pytestmark = CPP_KERNEL_MARKS

# (batch, in channels, out channels, plane (h, w), kernel (h, w), stride, padding, dilation, groups)
SHAPES = [
    (8, 16, 24, (4, 4), (3, 3), 1, 1, 1, 1),  # ResNet's last stage, scaled down
    (4, 8, 16, (7, 7), (3, 3), 1, 1, 1, 1),  # 49 values: four float32 vectors, two bfloat16
    (4, 8, 8, (5, 6), (3, 3), 1, 1, 1, 1),  # 30 values and positions: one bfloat16 vector, two float32
    (4, 8, 8, (8, 8), (3, 3), 1, 1, 1, 1),  # 64 values: the most
    (4, 8, 8, (9, 8), (3, 3), 1, 1, 1, 1),  # 72 values: the general im2col
    (6, 6, 10, (7, 7), (3, 3), 2, 1, 1, 1),  # strided
    (4, 4, 4, (5, 4), (1, 1), 1, 1, 1, 1),  # 1x1 with padding (not pointwise): 42 window positions
    (6, 4, 8, (4, 5), (2, 3), 1, (2, 1), 1, 1),  # rectangular kernel, padding wider than its reach
    (5, 8, 8, (6, 6), (3, 3), 1, 2, 2, 2),  # dilation, groups
    (3, 4, 6, (1, 1), (3, 3), 1, 1, 1, 1),  # one pixel, every tap but the centre in the padding
    (2, 4, 4, (3, 3), (3, 3), 1, 0, 1, 1),  # one window position
    (20, 4, 8, (2, 2), (2, 2), 1, 1, 1, 1),  # more blocks than threads
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=conv2d_shape_id)
def test_conv2d_and_weight_gradient_of_small_planes(shape, dtype):
    assert_conv2d_shape_matches_float64(shape, dtype)
