#include "trainers/fused_optim.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <xmmintrin.h>

#include <memory>
#include <sstream>
#include <vector>

namespace quilt::trainers {
namespace {

std::vector<torch::Tensor> make_params() {
  torch::manual_seed(7);
  return {torch::randn({64, 33}), torch::randn({7}), torch::randn({3, 4, 5, 5})};
}

// Runs `steps` updates with the same pseudo-random gradients (a function of the parameters and
// the step, as a real loss would be) and returns the parameters.
template <typename Opt, typename Options>
std::vector<torch::Tensor> run(Options options, int steps, std::vector<torch::Tensor> params,
                               std::unique_ptr<Opt>* keep = nullptr) {
  for (auto& p : params) p = p.clone().requires_grad_(true);
  auto opt = std::make_unique<Opt>(params, options);
  for (int s = 0; s < steps; ++s) {
    for (auto& p : params) {
      torch::NoGradGuard no_grad;
      p.mutable_grad() = (p * 0.3 + 0.1 * static_cast<double>(s + 1)).sin();
    }
    opt->step();
  }
  if (keep != nullptr) *keep = std::move(opt);
  return params;
}

void expect_close(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6))
        << "parameter " << i << " differs by " << (a[i] - b[i]).abs().max().item<float>();
  }
}

TEST(FusedSgd, MatchesTorchSgd) {
  using torch::optim::SGDOptions;
  for (const auto& o :
       {SGDOptions(0.05).momentum(0.9).weight_decay(5e-4), SGDOptions(0.01).momentum(0.9),
        SGDOptions(0.1), SGDOptions(0.05).momentum(0.8).dampening(0.2).weight_decay(1e-3),
        SGDOptions(0.05).momentum(0.9).nesterov(true)}) {
    expect_close(run<FusedSgd>(o, 6, make_params()), run<torch::optim::SGD>(o, 6, make_params()));
  }
}

TEST(FusedAdam, MatchesTorchAdam) {
  using torch::optim::AdamOptions;
  for (const auto& o :
       {AdamOptions(1e-3), AdamOptions(0.01).weight_decay(5e-4),
        AdamOptions(1e-3).betas({0.8, 0.99}).eps(1e-6), AdamOptions(1e-3).amsgrad(true)}) {
    expect_close(run<FusedAdam>(o, 6, make_params()), run<torch::optim::Adam>(o, 6, make_params()));
  }
}

// A channels-last parameter updated with contiguous gradients.
template <typename Opt, typename Options>
torch::Tensor run_mixed(Options options) {
  torch::manual_seed(3);
  auto p = torch::randn({3, 4, 5, 5}).contiguous(torch::MemoryFormat::ChannelsLast);
  p.requires_grad_(true);
  Opt opt(std::vector<torch::Tensor>{p}, options);
  for (int s = 0; s < 4; ++s) {
    {
      torch::NoGradGuard no_grad;
      p.mutable_grad() = (p * 0.3 + 0.1 * (s + 1)).sin().contiguous();
    }
    opt.step();
  }
  return p.detach().clone();
}

// Channels-last parameters (as train() keeps convolution weights), an autoencoder weight of shape
// [1, 32, 1, 1] (both layouts at once) and a gradient laid out unlike its parameter: the updates
// equal torch's, whichever path each case takes.
TEST(FusedOptim, ChannelsLastAndMixedLayoutsMatchTorch) {
  auto cl_params = [] {
    auto p = make_params();
    p[2] = p[2].contiguous(torch::MemoryFormat::ChannelsLast);
    p.push_back(torch::randn({1, 32, 1, 1}));
    p.push_back(torch::randn({32, 1, 1, 1}).contiguous(torch::MemoryFormat::ChannelsLast));
    return p;
  };
  const auto sgd = torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4);
  const auto fused = run<FusedSgd>(sgd, 6, cl_params());
  expect_close(fused, run<torch::optim::SGD>(sgd, 6, cl_params()));
  EXPECT_TRUE(fused[2].is_contiguous(torch::MemoryFormat::ChannelsLast));
  const auto adam = torch::optim::AdamOptions(1e-3).weight_decay(5e-4);
  expect_close(run<FusedAdam>(adam, 6, cl_params()), run<torch::optim::Adam>(adam, 6, cl_params()));

  // A gradient in another order than its parameter: still torch's result.
  EXPECT_TRUE(
      torch::allclose(run_mixed<FusedSgd>(sgd), run_mixed<torch::optim::SGD>(sgd), 1e-5, 1e-6));
}

// The state is LibTorch's: a checkpoint of the fused optimizer continues in torch's, and back.
TEST(FusedSgd, StateLoadsIntoTorchSgd) {
  const auto o = torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4);
  std::unique_ptr<FusedSgd> fused;
  auto params = run<FusedSgd>(o, 3, make_params(), &fused);
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive archive;
    fused->save(archive);
    archive.save_to(buffer);
  }
  auto ref_params = params;
  for (auto& p : ref_params) p = p.detach().clone().requires_grad_(true);
  torch::optim::SGD ref(ref_params, o);
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  ref.load(in);
  for (int s = 0; s < 2; ++s) {
    for (auto* set : {&params, &ref_params}) {
      for (auto& p : *set) {
        torch::NoGradGuard no_grad;
        p.mutable_grad() = p.cos();
      }
    }
    fused->step();
    ref.step();
  }
  expect_close(params, ref_params);
}

// A parameter whose gradient stays 0 has moments that decay into the denormal range, where each
// multiply is a microcode assist; the fused step flushes them to 0 (and leaves this thread's
// floating-point mode as it was).
TEST(FusedOptim, DenormalStateIsFlushedToZero) {
  const unsigned mxcsr_before = _mm_getcsr();
  auto p = torch::zeros({64}).requires_grad_(true);
  FusedAdam adam({p}, torch::optim::AdamOptions(1e-3));
  p.mutable_grad() = torch::full({64}, 1e-20f);  // squared: 1e-40, a denormal second moment
  adam.step();
  auto& s = static_cast<torch::optim::AdamParamState&>(
      *adam.state().at(c10::guts::to_string(p.unsafeGetTensorImpl())));
  EXPECT_EQ(s.exp_avg_sq().abs().max().item<float>(), 0.0f);
  EXPECT_GT(s.exp_avg().abs().min().item<float>(), 0.0f);  // 1e-21: normal, kept
  auto q = torch::zeros({64}).requires_grad_(true);
  FusedSgd sgd({q}, torch::optim::SGDOptions(0.1).momentum(0.9));
  q.mutable_grad() = torch::full({64}, 1e-39f);  // a denormal gradient: read as 0
  sgd.step();  // the first step copies the gradient into the momentum buffer
  sgd.step();  // 0.9 * buf + grad, both read as 0
  auto& b = static_cast<torch::optim::SGDParamState&>(
      *sgd.state().at(c10::guts::to_string(q.unsafeGetTensorImpl())));
  EXPECT_EQ(b.momentum_buffer().abs().max().item<float>(), 0.0f);
  const unsigned kFlags = 0x3f;  // sticky exception flags, set by any operation
  EXPECT_EQ(_mm_getcsr() & ~kFlags, mxcsr_before & ~kFlags);
}

TEST(Grads, ClearThenFillGivesZeros) {
  auto p = torch::ones({3}).requires_grad_(true);
  p.mutable_grad() = torch::ones({3});
  clear_grads({p});
  EXPECT_FALSE(p.grad().defined());
  fill_missing_grads({p});
  ASSERT_TRUE(p.grad().defined());
  EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
}

}  // namespace
}  // namespace quilt::trainers
