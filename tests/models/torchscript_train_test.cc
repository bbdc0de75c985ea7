// TorchScript models that train: their units run the graph before freezing on the scripted module
// itself (tests/models/make_torchscript_fixture.py's small_cnn, vit and mobilenet_v3_small), so
// gradients reach its parameters, BatchNorm and Dropout follow train()/eval(), the frozen graph
// that boards run is built from the current weights, and the trainers' modes work on them.

#include "models/quilt_model.h"
#include "models/state_dict.h"
#include "models/torchscript.h"
#include "models/zoo.h"
#include "tests/models/fixture.h"
#include "trainers/checkpoint.h"
#include "trainers/data.h"
#include "trainers/train.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace quilt::models {
namespace {

using testing::fixture;
using testing::read_f32;
using testing::relative_error;

const Shape kDigit = {1, 28, 28};
const Shape kImage = {3, 32, 32};

Model load(const std::string& name, const Shape& input, std::vector<std::string> cuts = {}) {
  ModelOptions o;
  o.path = fixture(name + ".pt");
  o.input_shape = input;
  o.cuts = std::move(cuts);
  return make_model(kTorchScriptArch, o);
}

TorchScriptModelImpl& as_script(Model& m) {
  auto* ts = dynamic_cast<TorchScriptModelImpl*>(m.get());
  EXPECT_NE(ts, nullptr);
  return *ts;
}

// Every parameter and buffer by name, copied (to compare before and after).
std::map<std::string, torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value().detach().clone();
  return out;
}

// The names of `before` whose tensors differ in `m` now.
std::vector<std::string> changed(const torch::nn::Module& m,
                                 const std::map<std::string, torch::Tensor>& before) {
  std::vector<std::string> out;
  for (const auto& [name, now] : snapshot(m))
    if (!torch::equal(now, before.at(name))) out.push_back(name);
  return out;
}

struct Case {
  std::string name;
  Shape input;
  std::vector<std::string> cuts;
};

// 4-D at the cut (Conv2d autoencoder), 2-D, a skip of two 3-D token tensors (Linear over the
// last dimension), a skip inside an inverted residual block, a traced model.
const std::vector<Case> kCases = {
    {"small_cnn", kDigit, {"after_features"}},
    {"small_cnn", kDigit, {"after_classifier.2"}},  // 2-D [N, 32]: Linear autoencoder
    {"vit", kImage, {"after_encoder.layers.encoder_layer_0.ln_2", "after_encoder"}},
    {"mobilenet_v3_small", kImage, {"after_features.5.block.0"}},
    {"vgg11", kImage, {"after_features.5"}},  // traced, not scripted
};

TEST(TorchScriptTraining, ParametersAreTheScriptedModulesUnderItsNames) {
  auto m = load("small_cnn", kDigit);
  auto& ts = as_script(m);
  EXPECT_TRUE(ts.training_error().empty()) << ts.training_error();
  std::map<std::string, torch::Tensor> jit;
  for (const auto& p : ts.scripted().named_parameters()) jit[p.name] = p.value;
  for (const auto& b : ts.scripted().named_buffers()) jit[b.name] = b.value;
  std::map<std::string, torch::Tensor> ours;
  for (const auto& p : m->named_parameters()) ours[p.key()] = p.value();
  for (const auto& b : m->named_buffers()) ours[b.key()] = b.value();
  ASSERT_EQ(ours.size(), jit.size());
  for (const auto& [name, t] : jit) {
    ASSERT_TRUE(ours.count(name)) << name;
    EXPECT_TRUE(ours.at(name).is_same(t)) << name << " is a copy, not the module's tensor";
  }
  EXPECT_TRUE(ours.count("features.1.running_mean"));
  EXPECT_TRUE(ours.count("classifier.4.weight"));
  // The QuiltModel adds its autoencoders beside the base's names; each unit registers its share.
  QuiltModel qm(m, {"after_features"}, {4.0, 1});
  std::set<std::string> keys;
  for (const auto& p : qm->named_parameters()) keys.insert(p.key());
  EXPECT_TRUE(keys.count("features.0.weight"));
  EXPECT_TRUE(keys.count("ae_after_features.encoder.weight"));
  int64_t unit_params = 0, params = 0;
  for (const auto& u : m->units())
    for (const auto& p : u.module.ptr()->parameters()) unit_params += p.numel();
  for (const auto& p : m->parameters()) params += p.numel();
  EXPECT_EQ(unit_params, params);
}

TEST(TorchScriptTraining, GradientsReachEveryParameter) {
  for (const auto& c : kCases) {
    torch::manual_seed(0);
    QuiltModel qm(load(c.name, c.input, c.cuts), c.cuts, {4.0, 1});
    qm->train();
    std::vector<int64_t> batch = {4};
    batch.insert(batch.end(), c.input.begin(), c.input.end());
    const auto x = torch::randn(batch);
    const auto y = torch::randint(0, 10, {4}, torch::kLong);
    torch::nn::functional::cross_entropy(qm->forward(x), y).backward();
    for (const auto& p : qm->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << c.name << ": no gradient for " << p.key();
      EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << c.name << ": " << p.key();
    }
  }
}

TEST(TorchScriptTraining, BatchNormAndDropoutFollowTrainAndEval) {
  torch::manual_seed(0);
  auto m = load("small_cnn", kDigit, {"after_features"});
  const auto x = torch::randn({8, 1, 28, 28});
  torch::NoGradGuard no_grad;
  m->eval();
  auto before = snapshot(*m);
  const auto a = m->forward(x);
  EXPECT_TRUE(torch::equal(a, m->forward(x)));  // eval: deterministic, no dropout
  EXPECT_TRUE(changed(*m, before).empty());     // and the running statistics stay
  m->train();
  const auto b = m->forward(x);
  EXPECT_FALSE(torch::allclose(a, b));  // batch statistics and dropout
  const auto moved = changed(*m, before);
  const std::set<std::string> moved_set(moved.begin(), moved.end());
  EXPECT_TRUE(moved_set.count("features.1.running_mean"));
  EXPECT_TRUE(moved_set.count("features.5.running_var"));
  EXPECT_TRUE(moved_set.count("features.1.num_batches_tracked"));
  EXPECT_FALSE(moved_set.count("features.0.weight"));
}

// What boards run: stage k's module from stage_module(), frozen, between the decoder of the cut
// before it and the encoder of the cut after it.
torch::Tensor run_frozen_stages(TorchScriptModelImpl& ts, QuiltModel& qm, torch::Tensor x) {
  for (size_t k = 0; k < qm->num_stages(); ++k) {
    const auto& spec = qm->stage(k);
    if (k > 0) x = qm->decode(k - 1, x);
    auto frozen = torch::jit::freeze(ts.stage_module(spec.first_unit, spec.end_unit));
    std::vector<c10::IValue> args;
    for (auto& t : unpack(x, ts.unit_in_shapes(spec.first_unit))) args.emplace_back(t);
    const auto out = frozen.forward(args);
    std::vector<torch::Tensor> outs;
    if (out.isTensor())
      outs.push_back(out.toTensor());
    else
      for (const auto& e : out.toTupleRef().elements()) outs.push_back(e.toTensor());
    x = pack(outs);
    if (k + 1 < qm->num_stages()) x = qm->encode(k, x);
  }
  return x;
}

TEST(TorchScriptTraining, FrozenStagesFollowWeightUpdates) {
  for (const auto& c : kCases) {
    torch::manual_seed(1);
    auto m = load(c.name, c.input, c.cuts);
    auto& ts = as_script(m);
    QuiltModel qm(m, c.cuts, {1.0, 1});
    std::vector<int64_t> batch = {3};
    batch.insert(batch.end(), c.input.begin(), c.input.end());
    const auto x = torch::randn(batch);
    torch::NoGradGuard no_grad;
    qm->eval();
    const auto original = qm->forward(x);
    EXPECT_LT(relative_error(run_frozen_stages(ts, qm, x), original), 1e-4) << c.name;
    // A weight update in place, as an optimizer's step (and BatchNorm statistics that moved).
    for (auto& p : m->parameters()) p.add_(0.05 * torch::randn_like(p));
    for (const auto& b : m->named_buffers())
      if (b.key().find("running_var") != std::string::npos) b.value().mul_(1.5);
    const auto want = qm->forward(x);
    EXPECT_GT(relative_error(want, original), 1e-3) << c.name << ": the update changed nothing";
    EXPECT_LT(relative_error(run_frozen_stages(ts, qm, x), want), 1e-4) << c.name;
  }
}

TEST(TorchScriptTraining, SavedWeightsLoadBack) {
  const auto dir = std::filesystem::temp_directory_path() / "quilt_ts_train_test";
  std::filesystem::create_directories(dir);
  torch::manual_seed(2);
  auto m = load("small_cnn", kDigit, {"after_features"});
  QuiltModel qm(m, {"after_features"}, {4.0, 1});
  {
    torch::NoGradGuard no_grad;
    for (auto& p : qm->parameters()) p.add_(0.05 * torch::randn_like(p));
  }
  const auto x = torch::randn({2, 1, 28, 28});
  qm->eval();
  torch::NoGradGuard no_grad;
  const auto want = qm->forward(x);
  // Base and autoencoders (what a training run saves) into a QuiltModel of the same cuts and
  // rate; the base's alone into the model (model.weights without autoencoders).
  const std::string with_ae = (dir / "qm.pt").string(), base_only = (dir / "base.pt").string();
  trainers::export_state_dict(*qm, with_ae);
  trainers::export_state_dict(*m, base_only);
  auto m2 = load("small_cnn", kDigit, {"after_features"});
  QuiltModel qm2(m2, {"after_features"}, {4.0, 1});
  load_state_dict(*qm2, with_ae);
  qm2->eval();
  EXPECT_LT(relative_error(qm2->forward(x), want), 1e-6);
  auto& ts2 = as_script(m2);
  EXPECT_LT(relative_error(run_frozen_stages(ts2, qm2, x), want), 1e-4);
  auto m3 = load("small_cnn", kDigit);
  load_state_dict(*m3, base_only);
  m3->eval();
  EXPECT_LT(relative_error(m3->forward(x), m->forward(x)), 1e-6);
  std::filesystem::remove_all(dir);
}

trainers::Dataset digits(int64_t samples) {
  trainers::DataOptions o;
  o.kind = trainers::DataKind::kSynthetic;
  o.synthetic_shape = kDigit;
  o.synthetic_classes = 10;
  o.synthetic_samples = samples;
  o.seed = 5;
  return trainers::make_synthetic(o);
}

trainers::TrainOptions quick(trainers::Mode mode, int64_t epochs) {
  trainers::TrainOptions o;
  o.mode = mode;
  o.optimizer = trainers::OptimizerKind::kAdam;
  o.lr = 2e-3;
  o.batch_size = 32;
  o.epochs = epochs;
  o.freeze_epochs = 1;
  o.eval_every_epoch = false;
  o.progress.style = trainers::ProgressStyle::kSilent;
  return o;
}

TEST(TorchScriptTraining, ScratchTrainingLearnsFashionMnist) {
  trainers::DataOptions o;
  o.kind = trainers::DataKind::kFashionMnist;
  o.train_samples = 1000;
  o.test_samples = 300;
  trainers::Dataset data;
  try {
    data = trainers::load_dataset(o);
  } catch (const trainers::DataError& e) {
    GTEST_SKIP() << e.what() << " (Debian package dataset-fashion-mnist)";
  }
  torch::manual_seed(3);
  QuiltModel qm(load("small_cnn", kDigit, {"after_features"}), {"after_features"}, {4.0, 1});
  const auto before = trainers::evaluate(qm, data.test, data.num_classes);
  const auto r = trainers::train(qm, data, quick(trainers::Mode::kScratch, 2));
  ASSERT_TRUE(r.ok) << r.failure;
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
  EXPECT_GT(r.final_test.top1, 0.5) << "chance is 0.1; before training " << before.top1;
}

TEST(TorchScriptTraining, FreezePhaseOneLeavesTheBaseAlone) {
  torch::manual_seed(4);
  const auto data = digits(200);
  auto m = load("small_cnn", kDigit, {"after_features"});
  QuiltModel qm(m, {"after_features"}, {4.0, 1});
  const auto base_before = snapshot(*m);
  const auto all_before = snapshot(*qm);
  // epochs = 0: phase 1 alone (autoencoders only, base frozen with its BatchNorm in eval mode).
  const auto r = trainers::train(qm, data, quick(trainers::Mode::kFreeze, 0));
  ASSERT_TRUE(r.ok) << r.failure;
  ASSERT_EQ(r.phases.size(), 1u);
  EXPECT_EQ(r.phases[0].trains, "autoencoders");
  EXPECT_TRUE(changed(*m, base_before).empty());
  const auto moved = changed(*qm, all_before);
  EXPECT_FALSE(moved.empty());
  for (const auto& name : moved) EXPECT_EQ(name.rfind("ae_", 0), 0u) << name;
}

TEST(TorchScriptTraining, ProxyLeavesTheBaseAlone) {
  torch::manual_seed(5);
  const auto data = digits(200);
  auto m = load("small_cnn", kDigit, {"after_features"});
  const auto before = snapshot(*m);
  trainers::ProxyOptions o;
  o.rates = {4};
  o.cut = "after_features";
  o.epochs = 2;
  o.progress.style = trainers::ProgressStyle::kSilent;
  const auto r = trainers::train_proxy(m, data, o);
  ASSERT_TRUE(r.ok) << r.failure;
  ASSERT_EQ(r.rates.size(), 1u);
  EXPECT_LT(r.rates[0].test_mse.back(), r.rates[0].test_mse.front());
  EXPECT_TRUE(changed(*m, before).empty());
}

TEST(TorchScriptTraining, ModelsThatCannotTrainSayWhy) {
  // Frozen before saving: no parameters, but inference works as before (the frozen graph).
  auto frozen = load("frozen_cnn", kDigit);
  const auto& why = as_script(frozen).training_error();
  EXPECT_NE(why.find("no parameters to train"), std::string::npos) << why;
  torch::NoGradGuard no_grad;
  frozen->eval();
  const auto x = read_f32("small_cnn_input.f32", {2, 1, 28, 28});
  const auto y = read_f32("small_cnn_output.f32", {2, 10});
  EXPECT_LT(relative_error(frozen->forward(x), y), 1e-4);
  auto cnn = load("small_cnn", kDigit);
  cnn->eval();
  EXPECT_LT(relative_error(cnn->forward(x), y), 1e-4);
}

}  // namespace
}  // namespace quilt::models
