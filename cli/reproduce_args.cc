// `quilt reproduce`'s options and the list of the paper's experiments (cli/reproduce_cmd.h).

#include "cli/cli.h"
#include "cli/reproduce_cmd.h"
#include "harness/experiment.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#ifndef QUILT_SOURCE_DIR
#define QUILT_SOURCE_DIR ""
#endif

namespace quilt::harness {
namespace {

namespace fs = std::filesystem;

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("quilt") : p.string();
}

}  // namespace

const std::vector<PaperExperiment>& paper_experiments() {
  static const std::vector<PaperExperiment> kAll = {
      {"efficiency", "Fig. 5"},
      {"breakdown", "Fig. 6"},
      {"interposition", "Table 3 (performance)"},
      {"interposition_multi", "Table 3 (multi-AE performance)"},
      {"partition_auto", "§3.4 cut search"},
      {"feasibility", "Fig. 2"},
      {"accuracy", "Table 1"},
      {"weight_freezing", "Table 2, Fig. 7"},
      {"tradeoff", "Fig. 4"},
      {"interposition_accuracy", "Table 3 (accuracy)"},
      {"precision", "bf16 / int8 boards (issue 13)"},
      {"precision_accuracy", "bf16 / int8 accuracy (issue 13)"},
  };
  return kAll;
}

ReproduceOptions parse_reproduce_args(int argc, char** argv) {
  ReproduceOptions o;
  cli::Parser p(
      "reproduce",
      "Runs every experiment of the paper (experiments/*.yaml but the quickstart), each "
      "under mpirun with its rank count (srun inside a SLURM allocation), resuming result "
      "files already in DIR, then every analysis script, and writes DIR/index.html and "
      "DIR/report.md.");
  p.option("--scale", "NAME",
           "scale of every experiment file: here (default), smoke (a few minutes in all) or paper",
           &o.scale)
      .option("--out", "DIR",
              "results, logs/, analysis/ and the report (default results/reproduce-<scale>)",
              &o.out_dir)
      .option("--only", "NAME[,NAME...]",
              "run only these experiments; the report still covers the others' files in DIR",
              [&o](const std::string& v) {
                std::stringstream ss(v);
                for (std::string n; std::getline(ss, n, ',');) {
                  if (n.empty()) continue;
                  const auto& all = paper_experiments();
                  if (std::none_of(all.begin(), all.end(),
                                   [&](const auto& e) { return e.name == n; })) {
                    std::vector<std::string> names;
                    for (const auto& e : all) names.push_back(e.name);
                    throw ConfigError("<command line>", 0, 0, "--only",
                                      fmt::format("`{}` is not an experiment of the paper; valid: "
                                                  "{}",
                                                  n, fmt::join(names, ", ")));
                  }
                  o.only.push_back(n);
                }
              })
      .option("--jobs", "N",
              "run up to N experiments at a time: one of r ranks takes r of the N slots (one "
              "wider than N runs alone); the start order stays the file order (default 1)",
              &o.jobs, 1)
      .option("--launcher", "L",
              "auto (srun when SLURM_JOB_ID is set, else mpirun), mpirun or srun",
              [&o](const std::string& v) {
                if (v != "auto" && v != "mpirun" && v != "srun")
                  throw ConfigError(
                      "<command line>", 0, 0, "--launcher",
                      fmt::format("`{}` is not a launcher; use auto, mpirun or srun", clip(v)));
                o.launcher = v;
              })
      .note(
          "exit codes: 0 all ok, 1 an experiment, a script or the report failed (the report "
          "says why), 2 bad arguments, 128+N interrupted by signal N (finished work is kept and "
          "reported)")
      .example("quilt reproduce --scale smoke --out /tmp/paper", "the whole paper in minutes")
      .example("quilt reproduce --jobs 2",
               "two experiments at a time (the 1-rank accuracy ones use both cores)")
      .example("make paper SCALE=here", "the same through make, at the default scale");
  if (!p.parse(argc, argv)) std::exit(0);  // --help was printed
  if (o.scale != "here" && o.scale != "smoke" && o.scale != "paper")
    throw ConfigError(
        "<command line>", 0, 0, "--scale",
        fmt::format("`{}` is not a scale of the reproduction; use here, smoke or paper", o.scale));
  if (o.out_dir.empty()) o.out_dir = "results/reproduce-" + o.scale;
  o.quilt_exe = self_exe();
  const fs::path build = fs::path(o.quilt_exe).parent_path().parent_path();
  const char* src = std::getenv("QUILT_SOURCE_DIR");
  o.source_dir = src && *src ? src : QUILT_SOURCE_DIR;
  if (o.source_dir.empty() || !fs::exists(fs::path(o.source_dir) / "experiments"))
    throw ConfigError("<command line>", 0, 0, "QUILT_SOURCE_DIR",
                      fmt::format("`{}` has no experiments/ folder; set QUILT_SOURCE_DIR to the "
                                  "Quilt source tree",
                                  o.source_dir));
  const char* py = std::getenv("QUILT_PYTHON");
  if (py && *py) o.python = py;
  const char* pp = std::getenv("QUILT_PYTHONPATH");
  o.python_path = pp && *pp ? pp : (build / "python").string();
  return o;
}

int cmd_reproduce(int argc, char** argv) { return run_reproduce(parse_reproduce_args(argc, argv)); }

}  // namespace quilt::harness
