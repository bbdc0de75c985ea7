#pragma once
// A model cut into pipeline stages, with an autoencoder interposed at each cut (when R > 1).
// Stage k runs: the decoder of the cut before it (if any), its units, the encoder of the cut
// after it (if any). This is both what the pipeline runs (one stage per board) and what the
// trainers train (all stages in sequence).

#include "models/autoencoder.h"
#include "models/model.h"

#include <torch/nn/modules/container/modulelist.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace quilt::models {

struct ModelSummary;  // models/summary.h

/// One pipeline stage: units [first_unit, end_unit) of the base model.
struct StageSpec {
  size_t first_unit = 0;
  size_t end_unit = 0;
  Shape in_shape;      ///< shape of one sample that enters the stage (encoded if an AE precedes it)
  Shape out_shape;     ///< shape of one sample that leaves the stage (encoded if an AE follows it)
  int64_t macs = 0;    ///< per sample, units plus the stage's decoder/encoder (see summary.h)
  int64_t flops = 0;   ///< 2 x macs
  int64_t params = 0;  ///< parameters of the units plus the stage's decoder/encoder
};

/// Per cut of a partition: what crosses between stage k and k+1. Where several tensors cross
/// (UNet's skips) the shapes are the packed ones (model.h) and bytes are summed over them.
struct CutTraffic {
  std::string cut;
  Shape shape;                        ///< without autoencoder (packed {total} for several)
  Shape wire_shape;                   ///< what actually crosses (encoded when R > 1)
  int64_t bytes_per_sample = 0;       ///< float32 bytes without autoencoder
  int64_t wire_bytes_per_sample = 0;  ///< float32 bytes that cross
  double requested_rate = 1.0;
  /// bytes_per_sample / wire_bytes_per_sample: C / ceil(C/R) for one tensor; 1 without
  /// autoencoder.
  double effective_rate = 1.0;
  std::vector<CutTensor> tensors;         ///< the crossing tensors, in packed order (one or more)
  std::vector<Shape> wire_tensor_shapes;  ///< each tensor as it crosses (encoded when R > 1)
};

/// What crosses `cut` with autoencoders built from `options` (one per crossing tensor when
/// options.rate > 1), without building them. Throws ModelError for invalid options or a tensor
/// an autoencoder cannot take.
CutTraffic cut_traffic(const CutPoint& cut, const AutoencoderOptions& options);

/// A view that applies the encoders (or decoders) of a cut with several crossing tensors to the
/// packed batch: unpack, encode (decode) each tensor with its own autoencoder, pack.
class CutCodecImpl : public torch::nn::Module {
 public:
  /// `autoencoders` in packed order (shared); `encode` picks encoders (else decoders).
  CutCodecImpl(std::vector<Autoencoder> autoencoders, bool encode);
  /// [N, packed input] -> [N, packed output].
  torch::Tensor forward(torch::Tensor x);
  const std::vector<Autoencoder>& autoencoders() const { return autoencoders_; }
  bool encodes() const { return encode_; }
  /// Per-tensor shapes this codec takes (original shapes when encoding, code shapes otherwise).
  std::vector<Shape> in_shapes() const;

 private:
  std::vector<Autoencoder> autoencoders_;
  bool encode_;
};
TORCH_MODULE(CutCodec);

/// "ae_" + the cut name with '.' replaced by '_' ("after_layer3.2" -> "ae_after_layer3_2"): the
/// name under which QuiltModel registers the autoencoder of that cut (module names cannot
/// contain dots). Where several tensors cross, this names a ModuleList of autoencoders, one per
/// tensor in packed order: "ae_after_down2.0", "ae_after_down2.1", ...
std::string autoencoder_module_name(const std::string& cut);

/// The base model plus one autoencoder per cut. Parameter names: the base model's own
/// (torchvision names for ResNet, unchanged, no prefix) plus "ae_<cut>.encoder.weight",
/// "ae_<cut>.encoder.bias", "ae_<cut>.decoder.weight", "ae_<cut>.decoder.bias" per cut when
/// R > 1, where ae_<cut> is autoencoder_module_name(cut) ("ae_after_layer3",
/// "ae_after_layer3_2"). A cut where several tensors cross gets one autoencoder per tensor,
/// "ae_<cut>.<i>.encoder.weight" etc. with i the tensor's index in packed order
/// ("ae_after_down2.1.decoder.bias" is down1's). So with R = 1 its state_dict is exactly the base
/// model's, and pretrained weights load through load_state_dict(*quilt->base(), path).
class QuiltModelImpl : public torch::nn::Module {
 public:
  /// Cuts `base` at the named cuts (in model order, no repeats; none = one stage) and
  /// interposes an autoencoder at each when options.rate > 1. Throws ModelError naming the bad
  /// cut and the valid ones, or for invalid options (see validate()).
  QuiltModelImpl(Model base, const std::vector<std::string>& cuts,
                 const AutoencoderOptions& options);

  /// The base model (shared: its layers are this module's layers).
  Model base() const { return base_; }
  /// The autoencoder options it was built with.
  const AutoencoderOptions& options() const { return options_; }
  /// Number of stages: cuts + 1.
  size_t num_stages() const { return stages_.size(); }
  /// Stage k (throws std::out_of_range past the end).
  const StageSpec& stage(size_t k) const { return stages_.at(k); }
  /// All stages in pipeline order.
  const std::vector<StageSpec>& stages() const { return stages_; }
  /// One entry per cut (num_stages() - 1).
  const std::vector<CutTraffic>& traffic() const { return traffic_; }
  /// The autoencoder at cut k (between stage k and k+1), or an empty holder (nullptr) for R = 1.
  /// Throws ModelError when several tensors cross cut k and R > 1 (use autoencoders(k)).
  Autoencoder autoencoder(size_t k) const;
  /// The autoencoders at cut k, one per crossing tensor in packed order; empty for R = 1.
  const std::vector<Autoencoder>& autoencoders(size_t k) const;
  /// Whether cut k has autoencoders (R > 1).
  bool has_autoencoder(size_t k) const { return !autoencoders(k).empty(); }
  /// Encodes what crosses cut k: [N, ...traffic()[k].shape] -> [N, ...wire_shape] (identity
  /// for R = 1).
  torch::Tensor encode(size_t k, torch::Tensor x);
  /// The inverse direction: [N, ...wire_shape] -> [N, ...shape] (identity for R = 1).
  torch::Tensor decode(size_t k, torch::Tensor x);
  /// The module that encode(k, .) runs, for compilers: the autoencoder's encoder layer
  /// (Conv2d / Linear) for one tensor, a CutCodec for several, empty for R = 1.
  torch::nn::AnyModule encoder_module(size_t k) const;
  /// Likewise for decode(k, .).
  torch::nn::AnyModule decoder_module(size_t k) const;

  /// Runs stage k on x (decoder, units, encoder). x: {N, ...stage(k).in_shape}.
  torch::Tensor forward_stage(size_t k, torch::Tensor x);
  /// Runs every stage in sequence: the single-process reference of the pipeline.
  torch::Tensor forward(torch::Tensor x);
  /// Parameters of the autoencoders only (what weight freezing trains in phase 1).
  std::vector<torch::Tensor> autoencoder_parameters() const;

  /// Sets training mode on the autoencoders, the base model's layers and the base model itself.
  void train(bool on = true) override;

 private:
  // Registers the autoencoders of `cut` (none where R == 1) and records its traffic.
  void add_cut_autoencoders(const CutPoint& cut);
  // Stage k: base units [first, end) plus the decoders of cut k - 1 and the encoders of cut k.
  StageSpec stage_spec(const ModelSummary& summary, size_t k, size_t first, size_t end) const;

  Model base_{nullptr};
  AutoencoderOptions options_;
  std::vector<StageSpec> stages_;
  std::vector<CutTraffic> traffic_;
  std::vector<std::vector<Autoencoder>> autoencoders_;     // per cut; empty where R == 1
  std::vector<torch::nn::AnyModule> encoders_, decoders_;  // per cut; empty where R == 1
};

/// Holder of QuiltModelImpl (as TORCH_MODULE(QuiltModel) would declare it), plus a constructor
/// that accepts braced lists: QuiltModel(base, {"after_layer3"}, {4.0, 1}).
class QuiltModel : public torch::nn::ModuleHolder<QuiltModelImpl> {
 public:
  using torch::nn::ModuleHolder<QuiltModelImpl>::ModuleHolder;
  using Impl = QuiltModelImpl;
  QuiltModel(Model base, const std::vector<std::string>& cuts, const AutoencoderOptions& options)
      : ModuleHolder(std::make_shared<QuiltModelImpl>(std::move(base), cuts, options)) {}
};

}  // namespace quilt::models
