#include <functional>
#include <numeric>

#include "wisp/inference.h"

namespace wisp {

std::string_view TensorTypeName(TensorType type) {
  switch (type) {
    case TensorType::kFloat32:
      return "float32";
  }
  return "unknown";
}

std::size_t Tensor::ElementCount() const {
  std::size_t count = 1;
  for (std::int64_t dim : shape) count *= dim > 0 ? static_cast<std::size_t>(dim) : 0;
  return count;
}

}  // namespace wisp
