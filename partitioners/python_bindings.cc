#include "partitioners/python_bindings.h"

#include "partitioners/cost_model.h"
#include "partitioners/error.h"
#include "partitioners/profile.h"
#include "partitioners/search.h"

#include <fmt/format.h>
#include <pybind11/stl.h>

#include <cmath>
#include <set>

namespace py = pybind11;

namespace quilt::partitioners {

namespace {

// Python values arrive as ints, floats or numpy scalars; a float that holds an integer is
// accepted where an integer is expected (flops = 4.1e9).
int64_t to_int(const py::handle& v, const std::string& what) {
  try {
    if (PyFloat_Check(v.ptr())) {
      const double d = v.cast<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9.2e18) {
        return static_cast<int64_t>(d);
      }
      throw PartitionError(fmt::format("{} = {} is not an integer", what, d));
    }
    return v.cast<int64_t>();
  } catch (const py::cast_error&) {
    throw PartitionError(
        fmt::format("{} must be an integer, got {}", what, std::string(py::repr(v))));
  }
}

double to_double(const py::handle& v, const std::string& what) {
  try {
    return v.cast<double>();
  } catch (const py::cast_error&) {
    throw PartitionError(
        fmt::format("{} must be a number, got {}", what, std::string(py::repr(v))));
  }
}

std::string to_str(const py::handle& v, const std::string& what) {
  if (!py::isinstance<py::str>(v)) {
    throw PartitionError(
        fmt::format("{} must be a string, got {}", what, std::string(py::repr(v))));
  }
  return v.cast<std::string>();
}

py::dict to_dict(const py::handle& v, const std::string& what) {
  if (!py::isinstance<py::dict>(v)) {
    throw PartitionError(fmt::format("{} must be a dict, got {}", what, std::string(py::repr(v))));
  }
  return py::reinterpret_borrow<py::dict>(v);
}

// Rejects keys outside `valid` (a typo must not silently fall back to a default).
void check_keys(const py::dict& d, const std::set<std::string>& valid,
                const std::set<std::string>& ignored, const std::string& what) {
  for (const auto& item : d) {
    const std::string key = to_str(item.first, what + " key");
    if (!valid.count(key) && !ignored.count(key)) {
      throw PartitionError(
          fmt::format("{}: unknown key '{}'; valid keys: {}", what, key, fmt::join(valid, ", ")));
    }
  }
}

// A named field of a result or profile struct: the key of its dict entry and its member.
template <typename S, typename T>
struct Field {
  const char* key;
  T S::*member;
};

// The number fields of a board profile (board_profile() and the boards' dicts), in dict order.
constexpr Field<BoardProfile, double> kBoardNumbers[] = {
    {"peak_flops", &BoardProfile::peak_flops}, {"efficiency", &BoardProfile::efficiency},
    {"overhead_s", &BoardProfile::overhead_s}, {"h2d_gbps", &BoardProfile::h2d_gbps},
    {"d2h_gbps", &BoardProfile::d2h_gbps},     {"link_latency_s", &BoardProfile::link_latency_s},
    {"mpi_gbps", &BoardProfile::mpi_gbps},     {"mpi_latency_s", &BoardProfile::mpi_latency_s}};

// A stage's layer range and per-sample counts, then its seconds per batch, in dict order.
constexpr Field<StageCost, int64_t> kStageCounts[] = {{"first_layer", &StageCost::first_layer},
                                                      {"end_layer", &StageCost::end_layer},
                                                      {"flops", &StageCost::flops},
                                                      {"ae_flops", &StageCost::ae_flops},
                                                      {"in_bytes", &StageCost::in_bytes},
                                                      {"out_bytes", &StageCost::out_bytes}};
constexpr Field<StageCost, double> kStageSeconds[] = {
    {"layers_s", &StageCost::layers_s},     {"ae_s", &StageCost::ae_s},
    {"overhead_s", &StageCost::overhead_s}, {"compute_s", &StageCost::compute_s},
    {"h2d_s", &StageCost::h2d_s},           {"d2h_s", &StageCost::d2h_s},
    {"mpi_s", &StageCost::mpi_s},           {"comm_s", &StageCost::comm_s},
    {"exec_s", &StageCost::exec_s}};

// A search result's seconds per batch, in dict order.
constexpr Field<SearchResult, double> kResultSeconds[] = {
    {"objective_s", &SearchResult::objective_s},
    {"imbalance_s", &SearchResult::imbalance_s},
    {"max_exec_s", &SearchResult::max_exec_s},
    {"sum_exec_s", &SearchResult::sum_exec_s}};

// d[key] = s.*member for each field, in order.
template <typename S, typename T, size_t N>
void put_fields(py::dict& d, const S& s, const Field<S, T> (&fields)[N]) {
  for (const auto& f : fields) d[f.key] = s.*f.member;
}

Shape to_shape(const py::handle& v, const std::string& what) {
  if (!py::isinstance<py::sequence>(v) || py::isinstance<py::str>(v)) {
    throw PartitionError(fmt::format("{} must be a list of ints ({{C, H, W}} or {{F}}), got {}",
                                     what, std::string(py::repr(v))));
  }
  Shape s;
  for (const auto& d : v) s.push_back(to_int(d, what + " dimension"));
  return s;
}

LayerProfile to_layer(const py::handle& v, size_t index) {
  const std::string what = fmt::format("layers[{}]", index);
  const py::dict d = to_dict(v, what);
  check_keys(d,
             {"name", "flops", "params", "out_bytes", "out_shape", "cut_allowed", "crossing",
              "measured_s"},
             {"in_shape", "macs"}, what);
  LayerProfile l;
  if (!d.contains("name") || !d.contains("flops")) {
    throw PartitionError(fmt::format("{}: 'name' and 'flops' are required", what));
  }
  l.name = to_str(d["name"], what + " name");
  l.flops = to_int(d["flops"], what + " flops");
  if (d.contains("params")) l.params = to_int(d["params"], what + " params");
  Shape out_shape;
  if (d.contains("out_shape")) {
    out_shape = to_shape(d["out_shape"], what + " out_shape");
    l.out_bytes = kFloatBytes * numel(out_shape);
  }
  if (d.contains("out_bytes")) {
    l.out_bytes = to_int(d["out_bytes"], what + " out_bytes");
  } else if (!d.contains("out_shape")) {
    throw PartitionError(fmt::format("{}: give 'out_shape' or 'out_bytes'", what));
  }
  if (d.contains("cut_allowed")) {
    const py::object v = d["cut_allowed"];
    if (!py::isinstance<py::bool_>(v)) {
      throw PartitionError(fmt::format("{} cut_allowed must be True or False, got {}", what,
                                       std::string(py::repr(v))));
    }
    l.cut_allowed = v.cast<bool>();
  }
  if (d.contains("crossing")) {
    size_t j = 0;
    for (const auto& t : d["crossing"]) {
      const std::string tw = fmt::format("{} crossing[{}]", what, j++);
      if (py::isinstance<py::dict>(t)) {
        const py::dict td = py::reinterpret_borrow<py::dict>(t);
        check_keys(td, {"name", "shape"}, {}, tw);
        if (!td.contains("shape")) throw PartitionError(tw + ": 'shape' is required");
        l.crossing.push_back(
            CrossingTensor{td.contains("name") ? to_str(td["name"], tw + " name") : std::string(),
                           to_shape(td["shape"], tw + " shape")});
      } else {
        l.crossing.push_back(CrossingTensor{"", to_shape(t, tw)});
      }
    }
  } else if (!out_shape.empty()) {
    l.crossing.push_back(CrossingTensor{"out", out_shape});
  }
  if (d.contains("measured_s")) {
    for (const auto& item : to_dict(d["measured_s"], what + " measured_s")) {
      const std::string board = to_str(item.first, what + " measured_s key");
      l.measured_s[board] = to_double(item.second, what + " measured_s['" + board + "']");
    }
  }
  return l;
}

ModelProfile to_model(const py::handle& layers, int64_t input_bytes, const std::string& name) {
  if (!py::isinstance<py::sequence>(layers)) {
    throw PartitionError("layers must be a list of dicts");
  }
  ModelProfile m;
  m.name = name;
  m.input_bytes = input_bytes;
  size_t i = 0;
  for (const auto& l : layers) m.layers.push_back(to_layer(l, i++));
  return m;
}

BoardProfile to_board(const py::handle& v, const std::string& what) {
  const py::dict d = to_dict(v, what);
  std::set<std::string> keys{"name"};
  for (const auto& f : kBoardNumbers) keys.insert(f.key);
  check_keys(d, keys, {}, what);
  BoardProfile b;
  if (d.contains("name")) b.name = to_str(d["name"], what + " name");
  for (const auto& f : kBoardNumbers) {
    if (d.contains(f.key)) b.*f.member = to_double(d[f.key], fmt::format("{} {}", what, f.key));
  }
  return b;
}

// A dict (every stage) or a list of dicts (one per stage).
std::vector<BoardProfile> to_boards(const py::handle& v) {
  std::vector<BoardProfile> boards;
  if (py::isinstance<py::dict>(v)) {
    boards.push_back(to_board(v, "board"));
  } else if (py::isinstance<py::sequence>(v)) {
    size_t i = 0;
    for (const auto& b : v) boards.push_back(to_board(b, fmt::format("boards[{}]", i++)));
  } else {
    throw PartitionError("boards must be a dict (every stage) or a list of dicts (one per stage)");
  }
  return boards;
}

py::dict board_dict(const BoardProfile& b) {
  py::dict d;
  d["name"] = b.name;
  put_fields(d, b, kBoardNumbers);
  return d;
}

py::dict stage_dict(const StageCost& c) {
  py::dict d;
  d["stage"] = c.stage;
  d["board"] = c.board;
  put_fields(d, c, kStageCounts);
  put_fields(d, c, kStageSeconds);
  return d;
}

py::dict result_dict(const SearchResult& r) {
  py::dict d;
  d["objective"] = to_string(r.objective);
  put_fields(d, r, kResultSeconds);
  d["cuts"] = r.cuts;
  d["cut_names"] = r.cut_names;
  py::list stages;
  for (const StageCost& c : r.stages) stages.append(stage_dict(c));
  d["stages"] = stages;
  d["evaluations"] = r.evaluations;
  return d;
}

SearchOptions to_options(int64_t k, const std::string& objective,
                         const std::vector<std::string>& fixed_cuts, int64_t batch, double rate,
                         int64_t kernel) {
  SearchOptions o;
  o.stages = k;
  o.objective = parse_objective(objective);
  o.fixed_cuts = fixed_cuts;
  o.cost.batch = batch;
  o.cost.rate = rate;
  o.cost.kernel = kernel;
  return o;
}

using SearchFn = SearchResult (*)(const ModelProfile&, const std::vector<BoardProfile>&,
                                  const SearchOptions&);

template <SearchFn fn>
py::dict run_search(const py::object& layers, const py::object& boards, int64_t k,
                    const std::string& objective, const std::vector<std::string>& fixed_cuts,
                    int64_t batch, int64_t input_bytes, double rate, int64_t kernel,
                    const std::string& name) {
  const ModelProfile model = to_model(layers, input_bytes, name);
  const std::vector<BoardProfile> bds = to_boards(boards);
  const SearchOptions o = to_options(k, objective, fixed_cuts, batch, rate, kernel);
  SearchResult r;
  {
    py::gil_scoped_release release;
    r = fn(model, bds, o);
  }
  return result_dict(r);
}

py::dict stage_costs(const py::object& layers, const py::object& boards, const py::object& cuts,
                     const std::string& objective, int64_t batch, int64_t input_bytes, double rate,
                     int64_t kernel, const std::string& name) {
  const ModelProfile model = to_model(layers, input_bytes, name);
  std::vector<int64_t> idx;
  size_t i = 0;
  for (const auto& c : cuts) {
    idx.push_back(py::isinstance<py::str>(c) ? layer_index(model, c.cast<std::string>())
                                             : to_int(c, fmt::format("cuts[{}]", i)));
    ++i;
  }
  const SearchOptions o =
      to_options(static_cast<int64_t>(idx.size()) + 1, objective, {}, batch, rate, kernel);
  return result_dict(evaluate(model, to_boards(boards), idx, o));
}

py::dict calibrate_py(const py::object& board, const py::object& samples) {
  const BoardProfile b = to_board(board, "board");
  std::vector<CalibrationSample> xs;
  size_t i = 0;
  for (const auto& s : samples) {
    const std::string what = fmt::format("samples[{}]", i++);
    CalibrationSample x;
    if (py::isinstance<py::dict>(s)) {
      const py::dict d = py::reinterpret_borrow<py::dict>(s);
      check_keys(d, {"flops", "measured_s"}, {}, what);
      if (!d.contains("flops") || !d.contains("measured_s")) {
        throw PartitionError(what + ": 'flops' and 'measured_s' are required");
      }
      x.flops = to_double(d["flops"], what + " flops");
      x.measured_s = to_double(d["measured_s"], what + " measured_s");
    } else {
      if (!py::isinstance<py::sequence>(s) || py::len(s) != 2) {
        throw PartitionError(what + " must be a (flops, measured_s) pair or a dict");
      }
      const py::sequence p = py::reinterpret_borrow<py::sequence>(s);
      x.flops = to_double(p[0], what + " flops");
      x.measured_s = to_double(p[1], what + " measured_s");
    }
    xs.push_back(x);
  }
  const CalibrationResult r = calibrate(b, xs);
  py::dict d;
  d["board"] = board_dict(r.board);
  d["mean_relative_error"] = r.mean_relative_error;
  d["r_squared"] = r.r_squared;
  d["samples"] = r.samples;
  return d;
}

constexpr const char* kLayersDoc =
    "layers: list of dicts in model order, each {'name', 'flops' (per sample, 2 x MACs), "
    "'out_shape' or 'out_bytes', optional 'params', 'cut_allowed' (default True), 'crossing' "
    "(shapes or {'name', 'shape'} dicts of the tensors crossing a cut after the layer; default "
    "[out_shape]), 'measured_s' ({board name: seconds per sample})}; the unit dicts of "
    "quilt.summary() are accepted. boards: a dict (every stage) or one dict per stage (keys of "
    "board_profile()). input_bytes: float32 bytes per sample of the model input. rate, kernel: "
    "the autoencoder at every cut (rate 1 = none). ";

}  // namespace

void bind_partitioners(py::module_& m) {
  py::register_exception<PartitionError>(m, "PartitionError", PyExc_ValueError);

  m.def(
      "board_profile",
      [](const py::kwargs& kwargs) { return board_dict(to_board(kwargs, "board_profile")); },
      "A board profile dict with every key, defaults filled in: name, peak_flops (FLOP/s), "
      "efficiency (0..1], overhead_s (per stage invocation), h2d_gbps (9.2), d2h_gbps (11.7), "
      "link_latency_s, mpi_gbps (12.5), mpi_latency_s. GB/s are 1e9 bytes/s.");

  const std::string result_doc =
      "Returns {'objective', 'objective_s', 'imbalance_s' (k*max - sum), 'max_exec_s', "
      "'sum_exec_s', 'cuts' (index of the layer before each cut), 'cut_names', 'stages' (per "
      "stage: board, first_layer, end_layer, flops, ae_flops, in_bytes, out_bytes, layers_s, "
      "ae_s, overhead_s, compute_s, h2d_s, d2h_s, mpi_s, comm_s, exec_s; seconds per batch), "
      "'evaluations'}. Raises PartitionError (a ValueError) on an invalid request.";
  m.def("search", &run_search<&search>, py::arg("layers"), py::arg("boards"), py::arg("k"),
        py::arg("objective") = "paper", py::arg("fixed_cuts") = std::vector<std::string>{},
        py::arg("batch") = 1, py::arg("input_bytes") = 0, py::arg("rate") = 1.0,
        py::arg("kernel") = 1, py::arg("name") = "",
        ("Exact optimal cuts for k pipeline stages. objective: 'paper' (sum |exec_max - exec_i|, "
         "QuiltNet section 3.4) or 'minmax'. fixed_cuts: names of layers after which a cut must "
         "lie. " +
         std::string(kLayersDoc) + result_doc)
            .c_str());
  m.def("brute_force", &run_search<&brute_force>, py::arg("layers"), py::arg("boards"),
        py::arg("k"), py::arg("objective") = "paper",
        py::arg("fixed_cuts") = std::vector<std::string>{}, py::arg("batch") = 1,
        py::arg("input_bytes") = 0, py::arg("rate") = 1.0, py::arg("kernel") = 1,
        py::arg("name") = "",
        ("Same as search(), by enumerating every combination of cuts (the test oracle). " +
         result_doc)
            .c_str());
  m.def("stage_costs", &stage_costs, py::arg("layers"), py::arg("boards"), py::arg("cuts"),
        py::arg("objective") = "paper", py::arg("batch") = 1, py::arg("input_bytes") = 0,
        py::arg("rate") = 1.0, py::arg("kernel") = 1, py::arg("name") = "",
        ("Predicted costs of the partition with the given cuts (layer names or indices; k = "
         "len(cuts) + 1). " +
         std::string(kLayersDoc) + result_doc)
            .c_str());
  m.def("calibrate", &calibrate_py, py::arg("board"), py::arg("samples"),
        "Fits efficiency and overhead_s of `board` (peak_flops kept) to samples of (flops, "
        "measured_s) by least squares: time = flops / (peak_flops * efficiency) + overhead_s. "
        "Returns {'board', 'mean_relative_error', 'r_squared', 'samples'}.");
}

}  // namespace quilt::partitioners
