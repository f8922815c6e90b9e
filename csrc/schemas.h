// Schemas of the compiled ops, in one list: csrc/ops.cpp defines them as the
// torchconv_cpp:: library; the CUDA emulation test (tests/cuda_emulation/)
// defines the same schemas under its own library name.
//
// Besides them, kGemmSchema: the CPU kernels' GEMM, for its tests only
// (cpu/gemm_op.cpp); it mutates c and returns nothing.
#pragma once

namespace torchconv {

inline constexpr const char* kOpSchemas[] = {
    "conv2d(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor",
    "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] output_padding, int groups, int[] dilation) -> Tensor",
    "conv2d_weight(Tensor input, Tensor grad_output, int[] weight_size, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor",
    "max_pool2d(Tensor input, int[] kernel_size, int[] stride, int[] padding, int[] dilation, bool ceil_mode) -> (Tensor, Tensor)",
    "max_pool2d_backward(Tensor grad_output, Tensor indices, int[] input_size, int[] kernel_size, int[] stride, int[] padding, int[] dilation) -> Tensor",
    "avg_pool2d(Tensor input, int[] kernel_size, int[] stride, int[] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor",
    "avg_pool2d_backward(Tensor grad_output, int[] input_size, int[] kernel_size, int[] stride, int[] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor",
};

inline constexpr const char* kGemmSchema =
    "gemm(Tensor a, Tensor b, Tensor(a!) c, bool transpose_a, bool transpose_b, float alpha, float beta) -> ()";

}  // namespace torchconv
