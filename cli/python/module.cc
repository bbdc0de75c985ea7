// `quilt._core`, the extension inside the Python package `quilt` (python/quilt/__init__.py
// re-exports it): model summaries and result files as plain Python structures (dicts, lists,
// numbers, strings); quilt.results builds pandas DataFrames on top of it.

#include "cli/collect_cmd.h"
#include "models/autoencoder.h"
#include "models/quilt_model.h"
#include "models/summary.h"
#include "models/zoo.h"
#include "partitioners/python_bindings.h"
#include "results/error.h"
#include "results/reader.h"
#include "results/trace_io.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/torch.h>

namespace py = pybind11;
using namespace quilt;

namespace {

py::list shape_list(const std::vector<int64_t>& s) {
  py::list l;
  for (auto d : s) l.append(d);
  return l;
}

py::dict summary(const std::string& arch, std::optional<std::vector<int64_t>> input,
                 std::optional<int64_t> classes, double rate, int64_t kernel) {
  torch::NoGradGuard no_grad;
  models::ModelOptions opts;
  if (input) opts.input_shape = *input;
  if (classes) opts.num_classes = *classes;
  auto model = models::make_model(arch, opts);
  auto s = models::summarize(model);
  py::dict d;
  d["arch"] = s.arch;
  d["input_shape"] = shape_list(s.input_shape);
  d["num_classes"] = s.num_classes;
  d["params"] = s.params;
  d["flops"] = s.flops;
  py::list units;
  for (const auto& u : s.units) {
    py::dict x;
    x["name"] = u.name;
    x["in_shape"] = shape_list(u.in_shape);
    x["out_shape"] = shape_list(u.out_shape);
    x["flops"] = u.flops;
    x["params"] = u.params;
    x["out_bytes"] = u.out_bytes;
    units.append(x);
  }
  d["units"] = units;
  py::list cuts;
  for (const auto& c : s.cuts) {
    // Several crossing tensors (UNet): packed shapes, bytes summed over the tensors.
    const auto t = models::cut_traffic(c, {rate, 1});
    py::dict x;
    x["name"] = c.name;
    x["after_unit"] = s.units.at(c.after_unit).name;
    x["shape"] = shape_list(t.shape);
    x["bytes_per_sample"] = t.bytes_per_sample;
    x["wire_shape"] = shape_list(t.wire_shape);
    x["wire_bytes_per_sample"] = t.wire_bytes_per_sample;
    x["effective_rate"] = t.effective_rate;
    py::list tensors, tensor_shapes;
    for (const auto& tensor : t.tensors) {
      tensors.append(tensor.name);
      tensor_shapes.append(shape_list(tensor.shape));
    }
    x["tensors"] = tensors;
    x["tensor_shapes"] = tensor_shapes;  // each crossing tensor's own shape, packed order
    cuts.append(x);
  }
  d["cuts"] = cuts;
  (void)kernel;
  return d;
}

// Every stored field of `rec` (results::FieldList) under its file name: numbers, strings,
// bools, and lists for the datasets.
template <class R>
py::dict fields_dict(const R& rec) {
  py::dict d;
  results::for_each_field(
      rec, [&](const results::Field& f, const auto& value) { d[f.name] = py::cast(value); });
  return d;
}

py::dict run_dict(const results::RunRecord& r) {
  py::dict d = fields_dict(r);
  d["id"] = r.id;
  d["params"] = r.params;
  py::list stages;
  for (const auto& s : r.stages) stages.append(fields_dict(s));
  d["stages"] = stages;
  // Training runs only (results/SCHEMA.md, /runs/<id>/training); None for pipeline runs.
  if (!r.training.mode.empty()) {
    py::dict tr = fields_dict(r.training);
    // None when the run had no convergence rule (quilt.verdicts prints "unknown").
    tr["converged"] = r.training.converged < 0 ? py::object(py::none())
                                               : py::object(py::bool_(r.training.converged));
    d["training"] = tr;
  } else {
    d["training"] = py::none();
  }
  return d;
}

py::dict read_results(const std::string& path) {
  auto e = results::read_experiment(path);
  py::dict d;
  d["schema_version"] = e.schema_version;
  d["name"] = e.name;
  d["experiment_hash"] = e.experiment_hash;
  d["provenance"] = fields_dict(e.provenance);
  py::list runs;
  for (const auto& r : e.runs) runs.append(run_dict(r));
  d["runs"] = runs;
  return d;
}

py::dict read_events(const std::string& path, const std::string& run_id) {
  auto e = results::read_experiment(path);
  const results::RunRecord& r = results::traced_run(e, path, run_id);
  const results::TraceRecord& t = r.trace;
  auto array = [](const auto& v) {
    using T = typename std::decay_t<decltype(v)>::value_type;
    return py::array_t<T>(static_cast<py::ssize_t>(v.size()), v.data());
  };
  py::dict d;
  d["run_id"] = r.id;
  d["time_model"] = r.time_model;
  d["clock"] = t.clock;
  d["dropped_events"] = t.dropped_events;
  d["max_batches"] = t.max_batches;
  d["phases"] = t.phases;
  d["rank"] = array(t.rank);
  d["batch"] = array(t.batch);
  d["repetition"] = array(t.repetition);
  py::list names;
  for (int64_t p : t.phase) names.append(py::str(t.phases.at(static_cast<size_t>(p))));
  d["phase"] = names;
  d["start_s"] = array(t.start_s);
  d["end_s"] = array(t.end_s);
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Quilt: model summaries and result files as plain Python structures";
  py::register_exception<models::ModelError>(m, "ModelError", PyExc_ValueError);
  py::register_exception<results::ResultsError>(m, "ResultsError", PyExc_OSError);
  m.def("model_names", &models::model_names, "Names of the model zoo.");
  m.def("summary", &summary, py::arg("arch"), py::arg("input") = py::none(),
        py::arg("classes") = py::none(), py::arg("rate") = 1.0, py::arg("kernel") = 1,
        "Per-unit shapes, FLOPs (2 x MACs) and parameters, and per cut the float32 bytes per "
        "sample without and with an autoencoder of rate `rate`. No forward pass is run.");
  m.def("encoded_channels", &models::encoded_channels, py::arg("channels"), py::arg("rate"),
        "ceil(channels / rate), at least 1.");
  m.def("effective_rate", &models::effective_rate, py::arg("channels"), py::arg("rate"),
        "channels / ceil(channels / rate): the reduction the autoencoder achieves.");
  m.def("read_results", &read_results, py::arg("path"),
        "Reads a Quilt HDF5 result file into dicts and lists (layout: results/SCHEMA.md).");
  m.def("read_events", &read_events, py::arg("path"), py::arg("run_id") = "",
        "The merged timeline of one run (/runs/<id>/trace, results/SCHEMA.md) as a dict: per "
        "event `rank`, `batch`, `repetition` (numpy int64), `phase` (list of names), `start_s`, "
        "`end_s` (numpy float64, seconds from the run's start on rank 0's clock), and `clock` "
        "('wall' or 'board'), `time_model`, `dropped_events`, `max_batches`, `phases`, `run_id`. "
        "run_id: an id or a unique prefix; empty = the first run with a trace.");
  m.def(
      "runs_csv",
      [](const std::vector<std::string>& paths) {
        return harness::to_csv(harness::runs_table(harness::read_files(paths)));
      },
      py::arg("paths"),
      "The runs of the result files `paths` as CSV text, one row per run: the table that "
      "`quilt collect` writes and quilt.results.runs() returns.");
  quilt::partitioners::bind_partitioners(m);
}
