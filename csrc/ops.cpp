// The compiled ops' library: one TORCH_LIBRARY block for the package, its
// schemas listed in schemas.h.
//
// The ops of kOpSchemas mirror the torchconv:: custom ops
// (torchconv/_library.py) one for one: torchconv/backends/cpp.py calls them
// as the "cpp" backend's kernels, and torchconv/_library.py gives them the
// fake kernels of its OPS table. Kernels are in cpu/ (TORCH_LIBRARY_IMPL for
// CPU) and cuda/ (for CUDA, when built).
// gemm (kGemmSchema) is the CPU kernels' GEMM, exposed for its tests.
// Importing torchconv._C (this library) is what registers them.
#include <Python.h>
#include <torch/library.h>

#include "python/eager.h"
#include "schemas.h"

TORCH_LIBRARY(torchconv_cpp, m) {
  for (const char* schema : torchconv::kOpSchemas) m.def(schema);
  m.def(torchconv::kGemmSchema);
}

// The module: importing it loads the library above; its functions are the
// public functions' compiled entries (python/eager.cpp).
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "torchconv's compiled kernels", -1,
                                      torchconv::python::eager_methods()};
  return PyModule_Create(&module);
}
