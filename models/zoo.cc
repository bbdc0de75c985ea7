#include "models/zoo.h"

#include "common/model_width.h"
#include "models/efficientnet.h"
#include "models/mlp.h"
#include "models/resnet.h"
#include "models/torchscript.h"
#include "models/unet.h"

#include <fmt/format.h>

namespace quilt::models {

std::vector<std::string> model_names() {
  return {"resnet18", "resnet50", "efficientnet_b0", "unet", "mlp"};
}

Model make_model(const std::string& arch, const ModelOptions& options) {
  if (arch == "resnet18" || arch == "resnet50") {
    const Shape input = options.input_shape.empty() ? Shape{3, 224, 224} : options.input_shape;
    const int64_t classes = options.num_classes == 0 ? 1000 : options.num_classes;
    return to_model(ResNet(arch == "resnet18" ? 18 : 50, input, classes, options.width));
  }
  if (options.width != 1.0 && !common::arch_has_width(arch)) {
    const std::string shown = arch.size() > 200 ? arch.substr(0, 200) + "..." : arch;
    throw ModelError(fmt::format("{} has no width multiplier (width {}); only {} take one", shown,
                                 options.width, common::kArchsWithWidth));
  }
  if (arch == "efficientnet_b0") {
    const Shape input = options.input_shape.empty() ? Shape{3, 224, 224} : options.input_shape;
    const int64_t classes = options.num_classes == 0 ? 1000 : options.num_classes;
    return to_model(EfficientNet(input, classes));
  }
  if (arch == "unet") {
    const Shape input = options.input_shape.empty() ? Shape{3, 256, 256} : options.input_shape;
    const int64_t classes = options.num_classes == 0 ? 2 : options.num_classes;
    return to_model(UNet(input, classes));
  }
  if (arch == "mlp") {
    const Shape input = options.input_shape.empty() ? Shape{64} : options.input_shape;
    const int64_t classes = options.num_classes == 0 ? 10 : options.num_classes;
    return to_model(Mlp(input, classes));
  }
  if (arch == kTorchScriptArch) {
    return to_model(TorchScriptModel(options.path, options.input_shape, options.cuts));
  }
  // Echoed at most 200 bytes: the name comes from the user's file.
  const std::string shown =
      arch.size() > 200 ? fmt::format("{}... ({} bytes)", arch.substr(0, 200), arch.size()) : arch;
  throw ModelError(
      fmt::format("unknown model \"{}\"; valid models: {}, {} (a TorchScript file in model.path)",
                  shown, fmt::join(model_names(), ", "), kTorchScriptArch));
}

}  // namespace quilt::models
