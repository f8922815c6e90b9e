// The compiled entries of torchconv's public functions: torchconv._C.conv2d,
// conv_transpose2d, max_pool2d and avg_pool2d, with torch.nn.functional's
// argument lists.
//
// torchconv/functional.py tries its entry first (torchconv/_eager.py says
// when it may) and takes the result, or NotImplemented: the entry declines
// every call it does not take as is, and the Python path then runs it, with
// torch's checks and messages. An entry takes the ordinary call of the cpp
// backend:
//
//  * plain CPU tensors (torch.Tensor or nn.Parameter, no subclass, no
//    functorch wrapper, no Python dispatch key) of one compiled dtype
//    (float32, float64, float16, bfloat16), batched (4-d) or not (3-d: given
//    a batch of one and returned without it, as the Python path does);
//  * under torch.autocast, a convolution's operands cast as autocast casts
//    them (torchconv/_library.py's autocast rule: floating but float64 to
//    autocast's dtype); poolings run in the input's dtype;
//  * sizes as an int or a tuple or list of two ints, every value valid and
//    the output non-empty: a subset of what the Python checks
//    (torchconv/_args.py) pass unchanged, so both paths agree on every call
//    the entry takes;
//  * nothing watching the dispatcher: no TorchDispatchMode, torch.func
//    transform, profiler or tracer, no forward-mode tangent, and
//    the TORCHCONV_BACKEND variable unset or "cpp".
//
// It then calls the op through the dispatcher: the Autograd kernel
// (autograd/functions.cpp) records the backward when an input requires grad
// and goes straight to the CPU kernel when none does.
#include <Python.h>
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/profiler/api.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdlib>
#include <cstring>
#include <optional>

#include "../calls.h"
#include "../window.h"
#include "eager.h"

namespace torchconv {
namespace python {
namespace {

// ------------------------------------------------------------ the route

// Dispatch keys of a tensor that something other than the CPU kernel must
// see: a Python subclass or mode, functorch's wrappers, lazy conjugate or
// negation bits, zero tensors.
const c10::DispatchKeySet kWatched({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                    c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper,
                                    c10::DispatchKey::Conjugate, c10::DispatchKey::Negative,
                                    c10::DispatchKey::ZeroTensor});

// Whether anything but the cpp backend's kernels must see the call.
bool dispatcher_watched() {
  if (c10::impl::TorchDispatchModeTLS::stack_len() > 0) return true;
  if (c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode)) return true;
  if (torch::profiler::impl::profilerEnabled() || torch::jit::tracer::isTracing()) return true;
  // torchconv.backends' variable: another backend asked for. (A
  // torchconv.backends.use() block is Python's to read: torchconv/_eager.py.)
  const char* backend = std::getenv("TORCHCONV_BACKEND");
  return backend != nullptr && backend[0] != '\0' && std::strcmp(backend, "cpp") != 0;
}

bool compiled_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

// The tensor of `object` if it is a plain strided CPU tensor of a compiled
// dtype that nothing but the kernel needs to see, else nullptr.
const at::Tensor* plain_tensor(PyObject* object) {
  if (!THPVariable_CheckExact(object)) return nullptr;
  const at::Tensor& t = THPVariable_Unpack(object);
  if (!t.device().is_cpu() || t.layout() != at::kStrided || !compiled_dtype(t.scalar_type())) return nullptr;
  if (t.key_set().has_any(kWatched) || t._fw_grad(/*level=*/0).defined()) return nullptr;
  return &t;
}

// An exact Python int that fits an int64_t.
bool plain_int(PyObject* object, int64_t& value) {
  if (!PyLong_CheckExact(object)) return false;
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(object, &overflow);
  if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return false;
  }
  value = v;
  return true;
}

// A size argument as torch's int[2] parser takes it: an int, or a tuple or
// list of two ints.
bool plain_pair(PyObject* object, int64_t (&pair)[2]) {
  if (plain_int(object, pair[0])) {
    pair[1] = pair[0];
    return true;
  }
  if (!PyTuple_CheckExact(object) && !PyList_CheckExact(object)) return false;
  if (PySequence_Fast_GET_SIZE(object) != 2) return false;
  PyObject** items = PySequence_Fast_ITEMS(object);
  return plain_int(items[0], pair[0]) && plain_int(items[1], pair[1]);
}

PyObject* declined() { Py_RETURN_NOTIMPLEMENTED; }

PyObject* wrap(at::Tensor&& t) { return THPVariable_Wrap(std::move(t)); }

// A result as the public function returns it: without the batch dimension
// an unbatched input was given.
PyObject* result(bool unbatched, at::Tensor&& out) { return wrap(unbatched ? out.squeeze(0) : std::move(out)); }

// ------------------------------------------------------------ convolutions

struct ConvCall {
  at::Tensor input, weight;
  std::optional<at::Tensor> bias;
  bool unbatched = false;
  int64_t stride[2], padding[2], dilation[2], groups;
};

// `t` as torch.autocast gives it to a convolution on the CPU: floating but
// float64 in autocast's dtype (at::autocast::cached_cast's rule, the one
// torch's own convolutions are cast by).
at::Tensor autocast(const at::Tensor& t) {
  return at::autocast::cached_cast(at::autocast::get_autocast_dtype(at::kCPU), t, at::kCPU);
}

// The tensors and sizes of a convolution call, if it is an ordinary one
// (args: input, weight, bias, stride, padding, then dilation and groups at
// `dilation_at` and `groups_at`).
bool conv_call(PyObject* const* args, Py_ssize_t dilation_at, Py_ssize_t groups_at, ConvCall& call) {
  const at::Tensor* input = plain_tensor(args[0]);
  const at::Tensor* weight = plain_tensor(args[1]);
  const at::Tensor* bias = args[2] == Py_None ? nullptr : plain_tensor(args[2]);
  if (input == nullptr || weight == nullptr || (args[2] != Py_None && bias == nullptr)) return false;
  if ((input->dim() != 4 && input->dim() != 3) || weight->dim() != 4 || (bias != nullptr && bias->dim() != 1)) {
    return false;
  }
  if (!plain_pair(args[3], call.stride) || !plain_pair(args[4], call.padding) ||
      !plain_pair(args[dilation_at], call.dilation) || !plain_int(args[groups_at], call.groups)) {
    return false;
  }
  for (int i = 0; i < 2; ++i) {
    if (call.stride[i] <= 0 || call.padding[i] < 0 || call.dilation[i] <= 0) return false;
  }
  if (dispatcher_watched()) return false;
  call.unbatched = input->dim() == 3;
  call.input = call.unbatched ? input->unsqueeze(0) : *input;
  call.weight = *weight;
  if (bias != nullptr) call.bias = *bias;
  if (at::autocast::is_autocast_enabled(at::kCPU)) {
    call.input = autocast(call.input);
    call.weight = autocast(call.weight);
    if (call.bias) call.bias = autocast(*call.bias);
  }
  const at::Tensor &x = call.input, &w = call.weight;
  if (x.scalar_type() != w.scalar_type() || (call.bias && call.bias->scalar_type() != x.scalar_type())) return false;
  const int64_t g = call.groups;
  if (g <= 0 || w.size(0) < g || w.size(0) % g != 0) return false;
  for (int d = 0; d < 4; ++d) {
    if (x.size(d) == 0) return false;
  }
  return true;
}

PyObject* conv2d(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  ConvCall call;
  if (nargs != 7 || !conv_call(args, 5, 6, call)) return declined();
  const at::Tensor &x = call.input, &w = call.weight;
  if (x.size(1) != w.size(1) * call.groups || (call.bias && call.bias->size(0) != w.size(0))) return declined();
  for (int i = 0; i < 2; ++i) {
    if (conv_output_size(x.size(2 + i), w.size(2 + i), call.stride[i], call.padding[i], call.dilation[i]) <= 0) {
      return declined();
    }
  }
  at::Tensor out;
  {
    pybind11::gil_scoped_release no_gil;
    out = calls::conv2d(x, w, call.bias, call.stride, call.padding, call.dilation, call.groups);
  }
  return result(call.unbatched, std::move(out));
  END_HANDLE_TH_ERRORS
}

PyObject* conv_transpose2d(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  // (input, weight, bias, stride, padding, output_padding, groups, dilation)
  ConvCall call;
  int64_t output_padding[2];
  if (nargs != 8 || !conv_call(args, 7, 6, call) || !plain_pair(args[5], output_padding)) return declined();
  const at::Tensor &x = call.input, &w = call.weight;
  if (x.size(1) != w.size(0) || (call.bias && call.bias->size(0) != w.size(1) * call.groups)) return declined();
  for (int i = 0; i < 2; ++i) {
    const int64_t op = output_padding[i], s = call.stride[i], d = call.dilation[i];
    if (op < 0 || (op >= s && op >= d)) return declined();
    if (conv_transpose_output_size(x.size(2 + i), w.size(2 + i), s, call.padding[i], op, d) <= 0) return declined();
  }
  at::Tensor out;
  {
    pybind11::gil_scoped_release no_gil;
    out = calls::conv_transpose2d(x, w, call.bias, call.stride, call.padding, output_padding, call.groups,
                                  call.dilation);
  }
  return result(call.unbatched, std::move(out));
  END_HANDLE_TH_ERRORS
}

// ------------------------------------------------------------ pooling

struct PoolCall {
  at::Tensor input;
  bool unbatched = false;
  int64_t kernel[2], stride[2], padding[2], dilation[2];
  bool ceil_mode;
};

// The tensor and sizes of a pooling call, if it is an ordinary one: a 3-d
// or 4-d input without empty planes; stride None (the kernel size) or a
// size; each padding at most half its kernel; a non-empty output.
bool pool_call(PyObject* input, PyObject* kernel, PyObject* stride, PyObject* padding, PyObject* dilation,
               PyObject* ceil_mode, PoolCall& call) {
  const at::Tensor* x = plain_tensor(input);
  if (x == nullptr || (x->dim() != 4 && x->dim() != 3)) return false;
  if (ceil_mode != Py_True && ceil_mode != Py_False) return false;
  call.ceil_mode = ceil_mode == Py_True;
  if (!plain_pair(kernel, call.kernel) || !plain_pair(padding, call.padding)) return false;
  if (dilation == nullptr) {
    call.dilation[0] = call.dilation[1] = 1;
  } else if (!plain_pair(dilation, call.dilation)) {
    return false;
  }
  if (stride == Py_None) {
    call.stride[0] = call.kernel[0];
    call.stride[1] = call.kernel[1];
  } else if (!plain_pair(stride, call.stride)) {
    return false;
  }
  call.unbatched = x->dim() == 3;
  call.input = call.unbatched ? x->unsqueeze(0) : *x;
  const at::Tensor& batched = call.input;
  if (batched.size(1) == 0 || batched.size(2) == 0 || batched.size(3) == 0) return false;
  for (int i = 0; i < 2; ++i) {
    const int64_t k = call.kernel[i], s = call.stride[i], p = call.padding[i], d = call.dilation[i];
    // p <= k / 2 also keeps it within half the effective (dilated) kernel.
    if (k <= 0 || s <= 0 || d <= 0 || p < 0 || p > k / 2) return false;
    if (pool_output_size(batched.size(2 + i), k, s, p, d, call.ceil_mode) < 1) return false;
  }
  return !dispatcher_watched();
}

PyObject* max_pool2d(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  // (input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
  PoolCall call;
  if (nargs != 7 || (args[6] != Py_True && args[6] != Py_False) ||
      !pool_call(args[0], args[1], args[2], args[3], args[4], args[5], call)) {
    return declined();
  }
  std::tuple<at::Tensor, at::Tensor> out;
  {
    pybind11::gil_scoped_release no_gil;
    out = calls::max_pool2d(call.input, call.kernel, call.stride, call.padding, call.dilation, call.ceil_mode);
  }
  if (args[6] == Py_False) return result(call.unbatched, std::move(std::get<0>(out)));
  PyObject* values = result(call.unbatched, std::move(std::get<0>(out)));
  PyObject* indices = values == nullptr ? nullptr : result(call.unbatched, std::move(std::get<1>(out)));
  if (indices == nullptr) {
    Py_XDECREF(values);
    return nullptr;
  }
  PyObject* pair = PyTuple_Pack(2, values, indices);
  Py_DECREF(values);
  Py_DECREF(indices);
  return pair;
  END_HANDLE_TH_ERRORS
}

PyObject* avg_pool2d(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  // (input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
  PoolCall call;
  if (nargs != 7 || (args[5] != Py_True && args[5] != Py_False) ||
      !pool_call(args[0], args[1], args[2], args[3], nullptr, args[4], call)) {
    return declined();
  }
  std::optional<int64_t> divisor;
  if (args[6] != Py_None) {
    int64_t value = 0;
    if (!plain_int(args[6], value) || value == 0) return declined();
    divisor = value;
  }
  at::Tensor out;
  {
    pybind11::gil_scoped_release no_gil;
    out = calls::avg_pool2d(call.input, call.kernel, call.stride, call.padding, call.ceil_mode,
                            args[5] == Py_True, divisor);
  }
  return result(call.unbatched, std::move(out));
  END_HANDLE_TH_ERRORS
}

PyMethodDef kMethods[] = {
    {"conv2d", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(conv2d)), METH_FASTCALL,
     "conv2d(input, weight, bias, stride, padding, dilation, groups): the result, or NotImplemented."},
    {"conv_transpose2d", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(conv_transpose2d)),
     METH_FASTCALL,
     "conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation): the result, or "
     "NotImplemented."},
    {"max_pool2d", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(max_pool2d)), METH_FASTCALL,
     "max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices): the result, or "
     "NotImplemented."},
    {"avg_pool2d", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(avg_pool2d)), METH_FASTCALL,
     "avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override): the "
     "result, or NotImplemented."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMethodDef* eager_methods() { return kMethods; }

}  // namespace python
}  // namespace torchconv
