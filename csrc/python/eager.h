// The compiled entries of torchconv's public functions (eager.cpp), as the
// methods of the torchconv._C module (ops.cpp).
#pragma once

#include <Python.h>

namespace torchconv {
namespace python {

PyMethodDef* eager_methods();

}  // namespace python
}  // namespace torchconv
