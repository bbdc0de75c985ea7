// The program-level passes of a stage's compiler: modules through their traced graphs (or whole
// as fallbacks), residual adds fused into convs, in-place ops and register lifetimes. The graph
// is lowered node by node in inference_graph.cc, single ops in inference_lowering.cc.

#include "backends/inference_compiler.h"

#include "backends/inference_graph.h"

#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

namespace quilt::backends::detail {
namespace {

// A module's forward as a fallback call (eval mode, InferenceMode).
struct ModuleCall final : FallbackCall {
  mutable nn::AnyModule module;  // forward() is not const
  at::Tensor run(const std::vector<at::Tensor>& srcs, int64_t /*n*/) const override {
    return module.forward<at::Tensor>(srcs.at(0));
  }
};

}  // namespace

int Compiler::any(const nn::AnyModule& m, int x, const std::string& name) {
  if (!force_fallback_) {
    Checkpoint cp = checkpoint();
    try {
      const TracedGraph t = trace_module(m, regs_[x].shape);
      std::vector<int> out = graph(*t.graph, {x}, name, t.batch);
      if (out.size() != 1) throw Unsupported{"a module with several outputs"};
      return out[0];
    } catch (const Unsupported& u) {
      restore(cp);
      note_ = fmt::format("{} ({})", name, u.why);
    }
  }
  return module_fallback(m, x, name);
}

int Compiler::module_fallback(const nn::AnyModule& m, int x, const std::string& name) {
  m.ptr()->eval();
  auto call = std::make_shared<ModuleCall>();
  call->module = m;
  const std::string why = note_.empty() ? fmt::format("{} ({})", name, type_name(*m.ptr())) : note_;
  note_.clear();
  return fallback(std::move(call), {x}, name, why);
}

int Compiler::fallback(std::shared_ptr<const FallbackCall> call, const std::vector<int>& xs,
                       const std::string& name, const std::string& why) {
  Instr in = op(Code::kFallback, name);
  // The output shape of a LibTorch call is found by running it once on zeros, batch 2 (a
  // batch of 1 would hide a call that does not keep the batch dimension).
  constexpr int64_t kProbe = 2;
  std::vector<at::Tensor> probes;
  for (int x : xs) {
    in.srcs.push_back(dense(x));
    Shape s = {kProbe};
    s.insert(s.end(), regs_[x].shape.begin(), regs_[x].shape.end());
    probes.push_back(at::zeros(s));
  }
  at::Tensor probe;
  {
    c10::InferenceMode guard;
    probe = call->run(probes, kProbe);
  }
  if (probe.dim() < 1 || probe.size(0) != kProbe || probe.scalar_type() != at::kFloat)
    throw Unsupported{fmt::format("{}: its output [{}] ({}) is not a float batch", name,
                                  fmt::join(probe.sizes(), ", "),
                                  c10::toString(probe.scalar_type()))};
  in.a = in.srcs.empty() ? -1 : in.srcs[0];
  in.call = std::move(call);
  fallbacks_.push_back(why);
  Shape out(probe.sizes().begin() + 1, probe.sizes().end());
  return emit(std::move(in), Reg{Layout::kDense, out, false, in.a});
}

int Compiler::finish(int out) {
  out = fuse_residual_adds(out);
  std::vector<int> last_use = last_uses(out);
  for (size_t i = 0; i < instrs_.size(); ++i) {
    Instr& in = instrs_[i];
    if (in.code == Code::kAdd || in.code == Code::kRelu || in.code == Code::kSilu ||
        in.code == Code::kHardswish || in.code == Code::kDenseAdd || in.code == Code::kGelu) {
      // Overwrite a only if nothing reads it later (its aliases included) and we made it.
      in.in_place =
          regs_[in.a].owned && last_use[in.a] == static_cast<int>(i) && (in.b < 0 || in.b != in.a);
      regs_[in.dst].owned = true;
    }
  }
  for (size_t r = 0; r < regs_.size(); ++r) {
    if (last_use[r] >= 0 && last_use[r] < static_cast<int>(instrs_.size()))
      instrs_[last_use[r]].release.push_back(static_cast<int>(r));
  }
  return out;
}

std::vector<int> Compiler::last_uses(int out) const {
  std::vector<int> last_use(regs_.size(), -1);
  for (size_t i = 0; i < instrs_.size(); ++i) {
    for (int r : {instrs_[i].a, instrs_[i].b})
      if (r >= 0) last_use[r] = static_cast<int>(i);
    for (int r : instrs_[i].srcs) last_use[r] = static_cast<int>(i);
  }
  last_use[out] = static_cast<int>(instrs_.size());
  for (size_t r = regs_.size(); r-- > 0;) {  // views come after their source
    if (regs_[r].alias_of >= 0)
      last_use[regs_[r].alias_of] = std::max(last_use[regs_[r].alias_of], last_use[r]);
  }
  return last_use;
}

// A residual add a + b where one operand (a) comes from a conv (without ReLU or sum) that
// only the add reads, and the other (b) is a blocked buffer this program made that nothing reads
// after the add: the conv moves to the add's place and accumulates into b (oneDNN sum post-op,
// then the add's ReLU), and the add disappears. Moving the conv down lets the identity branch
// be computed in either order (a graph computes the shortcut after the block's convs). Returns
// the result register, renamed if it was such an add.
int Compiler::fuse_residual_adds(int out) {
  for (size_t i = 0; i < instrs_.size(); ++i) {
    if (instrs_[i].code != Code::kAdd) continue;
    const std::vector<int> last_use = last_uses(out);
    const int sum = instrs_[i].dst;
    int j = -1, a = -1, b = -1;
    for (auto [x, y] : {std::pair{instrs_[i].a, instrs_[i].b}, {instrs_[i].b, instrs_[i].a}}) {
      if (x == y || !regs_[y].owned || regs_[y].layout != Layout::kMkldnn) continue;
      if (last_use[x] != static_cast<int>(i) || last_use[y] != static_cast<int>(i)) continue;
      int k = static_cast<int>(i);
      while (--k >= 0 && instrs_[k].dst != x) {
      }
      if (k < 0 || instrs_[k].code != Code::kConv || instrs_[k].relu || instrs_[k].b >= 0) continue;
      bool read_between = false;  // x must reach the add unread (its aliases too)
      for (int m = k + 1; m < static_cast<int>(i); ++m) {
        const Instr& r = instrs_[m];
        read_between = read_between || r.a == x || r.b == x ||
                       std::find(r.srcs.begin(), r.srcs.end(), x) != r.srcs.end();
      }
      for (const Reg& reg : regs_) read_between = read_between || reg.alias_of == x;
      // Nor may the conv's own input be overwritten by a sum between (another fused conv).
      for (int m = k + 1; m < static_cast<int>(i); ++m)
        read_between = read_between || (instrs_[m].code == Code::kConv && instrs_[m].b >= 0 &&
                                        instrs_[m].b == instrs_[k].a);
      if (read_between) continue;
      j = k, a = x, b = y;
      break;
    }
    if (j < 0) continue;
    Instr conv = std::move(instrs_[j]);
    conv.b = b;
    conv.relu = instrs_[i].relu;
    const std::string& add_name = instrs_[i].name;
    const size_t dot = add_name.rfind('.');
    conv.name += "+" + add_name.substr(dot == std::string::npos ? 0 : dot + 1);
    instrs_[i] = std::move(conv);
    instrs_.erase(instrs_.begin() + j);
    for (size_t k = i; k < instrs_.size(); ++k) {
      Instr& r = instrs_[k];
      if (r.a == sum) r.a = a;
      if (r.b == sum) r.b = a;
      for (int& src : r.srcs)
        if (src == sum) src = a;
    }
    for (Reg& reg : regs_)
      if (reg.alias_of == sum) reg.alias_of = a;
    if (out == sum) out = a;
    --i;
  }
  return out;
}

Compiler::Checkpoint Compiler::checkpoint() const {
  return {instrs_.size(), regs_.size(), fallbacks_.size(), mkldnn_of_, dense_of_};
}

void Compiler::restore(const Checkpoint& cp) {
  instrs_.resize(cp.instrs);
  regs_.resize(cp.regs);
  fallbacks_.resize(cp.fallbacks);
  mkldnn_of_ = cp.mkldnn_of;
  dense_of_ = cp.dense_of;
}

int Compiler::emit(Instr in, Reg reg) {
  in.dst = static_cast<int>(regs_.size());
  regs_.push_back(std::move(reg));
  instrs_.push_back(std::move(in));
  return instrs_.back().dst;
}

Instr* Compiler::producer(int r) {
  for (size_t i = instrs_.size(); i-- > 0;)
    if (instrs_[i].dst == r) return &instrs_[i];
  return nullptr;
}

}  // namespace quilt::backends::detail
