// torchconv_cpp::capability, supported_capabilities and set_capability:
// the capability levels of capability.h, for torchconv.backends.cpp
// (capability(), supported_capabilities(), use_capability()).
#include <torch/library.h>

#include <string>

#include "capability.h"

namespace torchconv {
namespace cpu {
namespace {

std::string capability_op() { return capability_name(capability()); }

// Sets the level in use and returns the one it replaces.
std::string set_capability_op(const std::string& name) {
  const std::string previous = capability_name(capability());
  set_capability(parse_capability(name));
  return previous;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(torchconv_cpp, m) {
  m.def("capability() -> str", &capability_op);
  m.def("supported_capabilities() -> str[]", &supported_capabilities);
  m.def("set_capability(str level) -> str", &set_capability_op);
}

}  // namespace cpu
}  // namespace torchconv
