// Schemas of the compiled ops, one TORCH_LIBRARY block for the package.
//
// The ops mirror the torchconv:: custom ops (torchconv/_library.py) one for
// one; torchconv/backends/cpp.py calls them as the "cpp" backend's kernels and
// registers their fake kernels. Kernels are in cpu/ (TORCH_LIBRARY_IMPL for
// CPU). Importing torchconv._C (this library) is what registers them.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(torchconv_cpp, m) {
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor");
  m.def("conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] output_padding, int groups, int[] dilation) -> Tensor");
  m.def("conv2d_weight(Tensor input, Tensor grad_output, int[] weight_size, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor");
  m.def("max_pool2d(Tensor input, int[] kernel_size, int[] stride, int[] padding, int[] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor indices, int[] input_size, int[] kernel_size, int[] stride, int[] padding, int[] dilation) -> Tensor");
  m.def("avg_pool2d(Tensor input, int[] kernel_size, int[] stride, int[] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  m.def("avg_pool2d_backward(Tensor grad_output, int[] input_size, int[] kernel_size, int[] stride, int[] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
}

// A module with no Python functions: importing it loads the library above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "torchconv's compiled kernels", -1, nullptr};
  return PyModule_Create(&module);
}
