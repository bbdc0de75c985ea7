#pragma once
// The `quilt` command line: one declarative parser per command (options, positionals, examples)
// that prints `quilt CMD --help`, rejects unknown options with a "did you mean", and converts
// values with range checks. No LibTorch, no MPI: commands parse before they start MPI.
// How to add a command: harness/README.md.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace quilt::harness::cli {

/// The command-line arguments of one `quilt` command. Declare the options, then parse():
///
///   cli::Parser p("summary", "per-unit shapes, FLOPs, parameters and bytes per cut");
///   p.positional("ARCH", "a model of `quilt models`", &arch);
///   p.option("--rate", "R", "autoencoder reduction rate (default 1)", &rate, 1.0);
///   p.example("quilt summary resnet50 --rate 64");
///   if (!p.parse(argc, argv)) return 0;  // --help was printed
///
/// Errors (unknown option, missing or malformed value, too few/many arguments) throw
/// ConfigError("<command line>", ...) naming the option and what is valid; the CLI maps that to
/// exit 2. `--name=value` is accepted for every option that takes a value.
class Parser {
 public:
  /// `command` is the word after `quilt` ("run"); `summary` one line for `quilt --help`.
  Parser(std::string command, std::string summary);

  /// A flag without value (`--resume`); sets *out = true.
  Parser& flag(const std::string& name, const std::string& help, bool* out);
  /// A flag calling `set` when given.
  Parser& flag(const std::string& name, const std::string& help, std::function<void()> set);
  /// An option with a text value (`--output PATH`).
  Parser& option(const std::string& name, const std::string& value_name, const std::string& help,
                 std::string* out);
  /// An option whose value is converted by `set` (throw ConfigError or std::invalid_argument
  /// from it for a bad value; the message then names the option).
  Parser& option(const std::string& name, const std::string& value_name, const std::string& help,
                 std::function<void(const std::string&)> set);
  /// An integer option (`--batch N`), checked to be >= min.
  Parser& option(const std::string& name, const std::string& value_name, const std::string& help,
                 int64_t* out, int64_t min);
  /// An integer option stored in an int, checked to be >= min.
  Parser& option(const std::string& name, const std::string& value_name, const std::string& help,
                 int* out, int min);
  /// A real option (`--rate R`), checked to be >= min.
  Parser& option(const std::string& name, const std::string& value_name, const std::string& help,
                 double* out, double min);
  /// An option whose value is optional (`--slurm [PATH]`): the next argument is its value when
  /// `accepts(next)` is true, else `set("")` is called.
  Parser& optional_value(const std::string& name, const std::string& value_name,
                         const std::string& help, std::function<bool(const std::string&)> accepts,
                         std::function<void(const std::string&)> set);
  /// Positional arguments: one (`min = max = 1`) or a list; they are appended to *out.
  Parser& positional(const std::string& name, const std::string& help,
                     std::vector<std::string>* out, size_t min = 1, size_t max = 1);
  /// A single positional argument stored in *out.
  Parser& positional(const std::string& name, const std::string& help, std::string* out,
                     bool required = true);
  /// An example command line shown by --help (with an optional comment).
  Parser& example(const std::string& command_line, const std::string& comment = "");
  /// A paragraph shown by --help after the options.
  Parser& note(const std::string& text);

  /// Parses argv[first..argc). Returns false when `--help` or `-h` was given: the help is then
  /// printed to stdout and nothing else was done. Throws ConfigError on a bad command line.
  bool parse(int argc, char** argv, int first = 2);
  /// The same for an argument list (without the program and command words).
  bool parse(const std::vector<std::string>& args);

  /// The full `--help` text.
  std::string help() const;
  /// One line for `quilt --help`: "run FILE [options]".
  std::string synopsis() const;
  const std::string& command() const { return command_; }
  const std::string& summary() const { return summary_; }

 private:
  struct Opt {
    std::string name, value_name, help;
    bool takes_value = false, optional = false;
    std::function<bool(const std::string&)> accepts;
    std::function<void(const std::string&)> set;
  };
  struct Pos {
    std::string name, help;
    size_t min = 1, max = 1;
    std::function<void(const std::string&)> add;
  };
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  const Opt* find(const std::string& name) const;

  std::string command_, summary_;
  std::vector<Opt> options_;
  std::vector<Pos> positionals_;
  std::vector<std::pair<std::string, std::string>> examples_;
  std::vector<std::string> notes_;
};

/// A `quilt` command: its name, one line for `quilt --help`, and its entry point (argv[1] is the
/// command's name; `--help` among the arguments prints its help and returns 0).
struct Command {
  std::string name;
  std::string summary;
  std::function<int(int, char**)> run;
};

/// The top-level `quilt --help`: every command with its summary.
std::string top_level_help(const std::vector<Command>& commands);

/// Dispatches argv to the command it names: `quilt CMD ...`, `quilt help [CMD]`, `quilt --help`.
/// Unknown command: message with a "did you mean" on stderr, exit 2. Does not catch exceptions.
int dispatch(const std::vector<Command>& commands, int argc, char** argv);

/// A per-sample shape from the command line: positive sizes separated by `,` or `x` ("3,224,224",
/// "64"). Throws std::invalid_argument saying what is valid, which Parser reports under the option.
std::vector<int64_t> parse_shape(const std::string& text);

/// Whether `argv[first..argc)` asks for help (`--help` or `-h`), for commands that must know
/// before they do anything else (`quilt run` starts MPI).
bool wants_help(int argc, char** argv, int first = 2);

}  // namespace quilt::harness::cli
