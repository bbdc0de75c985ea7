// Data-parallel training under mpiexec: every rank trains its shard of each global batch with
// gradients averaged through MPI_Allreduce (the collective the harness injects), and the result
// must match single-process training of the same model, seed and global batch (MLP: no
// BatchNorm) up to floating-point rounding. Every rank also computes the single-process
// reference itself. Exit code 0 when every check passes on every rank.

#include "models/zoo.h"
#include "trainers/train.h"

#include <fmt/format.h>
#include <mpi.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace {

using namespace quilt;

int failures = 0;
int rank = 0, size = 1;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
  }
}

// The collective the harness would pass: element-wise mean over ranks, in place.
void mpi_average(std::vector<torch::Tensor>& tensors) {
  for (auto& t : tensors) {
    if (!t.is_contiguous()) throw std::logic_error("mpi_average needs contiguous tensors");
    MPI_Datatype type = t.scalar_type() == torch::kFloat64 ? MPI_DOUBLE : MPI_FLOAT;
    int rc = MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), type, MPI_SUM,
                           MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) throw std::runtime_error(fmt::format("MPI_Allreduce failed ({})", rc));
    t.div_(size);
  }
}

models::QuiltModel make(double rate) {
  torch::manual_seed(7);
  return models::QuiltModel(models::make_model("mlp", {{16}, 4}), {"after_hidden1"}, {rate, 1});
}

void compare(const std::string& name, trainers::TrainOptions options, double rate,
             int64_t samples = 700) {
  trainers::DataOptions d;
  d.synthetic_shape = {16};
  d.synthetic_samples = samples;
  d.seed = 2;
  const auto data = trainers::make_synthetic(d);
  options.progress.style = trainers::ProgressStyle::kSilent;

  auto single_model = make(rate);
  const auto single = trainers::train(single_model, data, options);
  auto dp_model = make(rate);
  options.progress.style = trainers::ProgressStyle::kLines;
  options.progress.out = stdout;
  const auto dp = trainers::train(dp_model, data, options, {rank, size, mpi_average});

  check(single.ok && dp.ok, name + ": both runs succeed (" + single.failure + dp.failure + ")");
  check(single.epochs.size() == dp.epochs.size(), name + ": same epoch count");
  for (size_t i = 0; i < std::min(single.epochs.size(), dp.epochs.size()); ++i) {
    const auto& a = single.epochs[i];
    const auto& b = dp.epochs[i];
    check(std::abs(a.train_loss - b.train_loss) <= 1e-5 * std::max(1.0, a.train_loss),
          fmt::format("{}: epoch {} train loss {} (1 process) vs {} ({} ranks)", name, i + 1,
                      a.train_loss, b.train_loss, size));
    check(std::abs(a.test.loss - b.test.loss) <= 1e-5 * std::max(1.0, a.test.loss),
          fmt::format("{}: epoch {} test loss {} vs {}", name, i + 1, a.test.loss, b.test.loss));
    check(std::abs(a.test.top1 - b.test.top1) <= 1.5 / a.test.samples,
          fmt::format("{}: epoch {} test top1 {} vs {}", name, i + 1, a.test.top1, b.test.top1));
    check(a.samples == b.samples && b.test.samples == data.test.size(),
          fmt::format("{}: epoch {} samples {} vs {}, test samples {}", name, i + 1, a.samples,
                      b.samples, b.test.samples));
    if (rank == 0) {
      std::printf("%s epoch %zu: loss %.7f (1 process) %.7f (%d ranks), test top1 %.4f %.4f\n",
                  name.c_str(), i + 1, a.train_loss, b.train_loss, size, a.test.top1, b.test.top1);
    }
  }
  for (const auto& p : single_model->named_parameters()) {
    const auto& q = dp_model->named_parameters()[p.key()];
    const double diff = (p.value() - q).abs().max().item<double>();
    check(diff < 1e-4, fmt::format("{}: {} differs by {}", name, p.key(), diff));
  }
  // Every rank holds the same weights.
  auto w = dp_model->named_parameters()["fc1.weight"].clone();
  auto mine = w.clone();
  std::vector<torch::Tensor> v{w};
  mpi_average(v);
  check(torch::allclose(v[0], mine, 0, 1e-6), name + ": ranks hold the same weights");
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  torch::set_num_threads(1);
  try {
    trainers::TrainOptions scratch;
    scratch.epochs = 3;
    scratch.batch_size = 63;  // shards of 31 and 32; the last batch of each epoch is shorter
    scratch.lr = 0.05;
    scratch.seed = 4;
    compare("scratch sgd R4", scratch, 4.0);

    trainers::TrainOptions freeze;
    freeze.mode = trainers::Mode::kFreeze;
    freeze.optimizer = trainers::OptimizerKind::kAdam;
    freeze.lr = 1e-3;
    freeze.freeze_epochs = 1;
    freeze.epochs = 1;
    freeze.batch_size = 64;
    compare("freeze adam R8", freeze, 8.0);

    // A global batch smaller than the ranks: some shards are empty, the collective still runs.
    trainers::TrainOptions tiny;
    tiny.epochs = 1;
    tiny.batch_size = 1;
    tiny.lr = 0.01;
    compare("batch 1 sgd R4", tiny, 4.0, 40);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  int total = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0)
    std::printf("%s: %d failed checks over %d ranks\n", total == 0 ? "PASS" : "FAIL", total, size);
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}
