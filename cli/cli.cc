#include "cli/cli.h"

#include "harness/experiment.h"

#include <fmt/format.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

namespace quilt::harness::cli {
namespace {

constexpr const char* kCommandLine = "<command line>";
constexpr int kExitUsage = 2;

[[noreturn]] void fail_for(const std::string& command, const std::string& key,
                           const std::string& message) {
  throw ConfigError(kCommandLine, 0, 0, key,
                    fmt::format("{} (see `quilt {} --help`)", message, command));
}

bool is_help(const std::string& a) { return a == "--help" || a == "-h"; }

// Long help lines wrap at this column, indented under the option.
constexpr size_t kWidth = 100;
constexpr size_t kIndent = 28;

std::string wrap(const std::string& text, size_t indent, size_t first_column) {
  std::string out, line;
  size_t column = first_column;
  auto flush = [&]() {
    out += line;
    line.clear();
  };
  size_t pos = 0;
  bool first_word = true;
  while (pos < text.size()) {
    if (text[pos] == '\n') {
      flush();
      out += "\n" + std::string(indent, ' ');
      column = indent;
      first_word = true;
      ++pos;
      continue;
    }
    size_t end = text.find_first_of(" \n", pos);
    if (end == std::string::npos) end = text.size();
    std::string word = text.substr(pos, end - pos);
    if (!first_word && column + 1 + word.size() > kWidth) {
      flush();
      out += "\n" + std::string(indent, ' ');
      column = indent;
      first_word = true;
    }
    if (!first_word) line += ' ', ++column;
    line += word;
    column += word.size();
    first_word = false;
    pos = end < text.size() && text[end] == ' ' ? end + 1 : end;
  }
  flush();
  return out;
}

// "  --name VALUE            help" with the help wrapped under column kIndent.
std::string item(const std::string& left, const std::string& help) {
  std::string head = "  " + left;
  if (head.size() + 2 > kIndent)
    return head + "\n" + std::string(kIndent, ' ') + wrap(help, kIndent, kIndent) + "\n";
  return head + std::string(kIndent - head.size(), ' ') + wrap(help, kIndent, kIndent) + "\n";
}

}  // namespace

Parser::Parser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

Parser& Parser::flag(const std::string& name, const std::string& help, bool* out) {
  return flag(name, help, [out] { *out = true; });
}

Parser& Parser::flag(const std::string& name, const std::string& help, std::function<void()> set) {
  options_.push_back({name, "", help, false, false, nullptr,
                      [set = std::move(set)](const std::string&) { set(); }});
  return *this;
}

Parser& Parser::option(const std::string& name, const std::string& value_name,
                       const std::string& help, std::string* out) {
  return option(name, value_name, help, [out](const std::string& v) { *out = v; });
}

Parser& Parser::option(const std::string& name, const std::string& value_name,
                       const std::string& help, std::function<void(const std::string&)> set) {
  options_.push_back({name, value_name, help, true, false, nullptr, std::move(set)});
  return *this;
}

namespace {

// A number as a numeric option of type T reads it: std::stod for a double, std::stoll otherwise;
// `used` gets how many characters it took.
template <class T>
auto parse_number(const std::string& v, size_t* used) {
  if constexpr (std::is_floating_point_v<T>)
    return std::stod(v, used);
  else
    return std::stoll(v, used);
}

// A numeric option's setter: the whole value must be the number, at least `min` and at most
// what T holds (below 1e300 for a double).
template <class T>
std::function<void(const std::string&)> number_setter(const std::string& command,
                                                      const std::string& name, T* out, T min) {
  return [command, name, out, min](const std::string& v) {
    try {
      size_t used = 0;
      const auto x = parse_number<T>(v, &used);
      const bool fits =
          std::is_floating_point_v<T> ? x < 1e300 : x <= std::numeric_limits<T>::max();
      if (used == v.size() && x >= min && fits) {
        *out = static_cast<T>(x);
        return;
      }
    } catch (const std::exception&) {
    }
    fail_for(command, name,
             fmt::format("needs {} >= {} (got `{}`)",
                         std::is_floating_point_v<T> ? "a number" : "an integer", min, v));
  };
}

}  // namespace

Parser& Parser::option(const std::string& name, const std::string& value_name,
                       const std::string& help, int64_t* out, int64_t min) {
  return option(name, value_name, help, number_setter(command_, name, out, min));
}

Parser& Parser::option(const std::string& name, const std::string& value_name,
                       const std::string& help, int* out, int min) {
  return option(name, value_name, help, number_setter(command_, name, out, min));
}

Parser& Parser::option(const std::string& name, const std::string& value_name,
                       const std::string& help, double* out, double min) {
  return option(name, value_name, help, number_setter(command_, name, out, min));
}

Parser& Parser::optional_value(const std::string& name, const std::string& value_name,
                               const std::string& help,
                               std::function<bool(const std::string&)> accepts,
                               std::function<void(const std::string&)> set) {
  options_.push_back({name, value_name, help, true, true, std::move(accepts), std::move(set)});
  return *this;
}

Parser& Parser::positional(const std::string& name, const std::string& help,
                           std::vector<std::string>* out, size_t min, size_t max) {
  positionals_.push_back(
      {name, help, min, max, [out](const std::string& v) { out->push_back(v); }});
  return *this;
}

Parser& Parser::positional(const std::string& name, const std::string& help, std::string* out,
                           bool required) {
  positionals_.push_back(
      {name, help, required ? 1u : 0u, 1, [out](const std::string& v) { *out = v; }});
  return *this;
}

Parser& Parser::example(const std::string& command_line, const std::string& comment) {
  examples_.emplace_back(command_line, comment);
  return *this;
}

Parser& Parser::note(const std::string& text) {
  notes_.push_back(text);
  return *this;
}

void Parser::fail(const std::string& key, const std::string& message) const {
  fail_for(command_, key, message);
}

const Parser::Opt* Parser::find(const std::string& name) const {
  for (const auto& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

bool Parser::parse(int argc, char** argv, int first) {
  std::vector<std::string> args;
  for (int i = first; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

bool Parser::parse(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--") break;
    if (is_help(a)) {
      std::fputs(help().c_str(), stdout);
      return false;
    }
  }
  std::vector<std::string> words;
  bool only_words = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    if (only_words || a.size() < 2 || a[0] != '-' || (a[1] != '-' && !std::isalpha(a[1]))) {
      // Not an option: a positional (negative numbers and `-` included).
      words.push_back(a);
      continue;
    }
    if (a == "--") {
      only_words = true;
      continue;
    }
    std::string inline_value;
    bool has_inline = false;
    if (size_t eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
      inline_value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    const Opt* o = find(a);
    if (o == nullptr) {
      std::vector<std::string> names;
      for (const auto& opt : options_) names.push_back(opt.name);
      names.push_back("--help");
      fail(a, fmt::format("unknown option for `quilt {}`{}", command_,
                          did_you_mean(a, names, "options")));
    }
    try {
      if (!o->takes_value) {
        if (has_inline) fail(a, "takes no value");
        o->set("");
      } else if (has_inline) {
        o->set(inline_value);
      } else if (o->optional) {
        if (i + 1 < args.size() && o->accepts(args[i + 1]))
          o->set(args[++i]);
        else
          o->set("");
      } else {
        if (i + 1 >= args.size()) fail(a, fmt::format("needs a value ({})", o->value_name));
        o->set(args[++i]);
      }
    } catch (const std::invalid_argument& e) {
      fail(a, e.what());
    } catch (const std::out_of_range& e) {
      fail(a, e.what());
    }
  }
  // Assign the positionals in order; the last list may take the rest.
  size_t w = 0;
  for (size_t p = 0; p < positionals_.size(); ++p) {
    const auto& pos = positionals_[p];
    size_t reserve = 0;  // words the later positionals need
    for (size_t q = p + 1; q < positionals_.size(); ++q) reserve += positionals_[q].min;
    size_t taken = 0;
    while (w < words.size() && taken < pos.max && words.size() - w > reserve) {
      pos.add(words[w++]);
      ++taken;
    }
    if (taken < pos.min)
      fail(command_, pos.min == 1 && pos.max == 1
                         ? fmt::format("needs {} ({})", pos.name, pos.help)
                         : fmt::format("needs at least {} {} ({})", pos.min, pos.name, pos.help));
  }
  if (w < words.size()) {
    if (positionals_.empty())
      fail(words[w], fmt::format("`quilt {}` takes no arguments", command_));
    fail(words[w], fmt::format("unexpected argument; `quilt {}` takes {}", command_, synopsis()));
  }
  return true;
}

std::string Parser::synopsis() const {
  std::string s = command_;
  for (const auto& p : positionals_) {
    std::string n = p.max > 1 ? p.name + "..." : p.name;
    s += " " + (p.min == 0 ? "[" + n + "]" : n);
  }
  for (const auto& o : options_) {
    std::string v =
        o.value_name.empty() ? "" : (o.optional ? " [" + o.value_name + "]" : " " + o.value_name);
    s += " [" + o.name + v + "]";
  }
  return s;
}

std::string Parser::help() const {
  std::string out =
      fmt::format("{}\n\n{}\n", wrap("usage: quilt " + synopsis(), 6, 0), wrap(summary_, 0, 0));
  if (!positionals_.empty()) {
    out += "\narguments:\n";
    for (const auto& p : positionals_) out += item(p.name, p.help);
  }
  out += "\noptions:\n";
  for (const auto& o : options_) {
    std::string left = o.name;
    if (!o.value_name.empty()) left += o.optional ? " [" + o.value_name + "]" : " " + o.value_name;
    out += item(left, o.help);
  }
  out += item("-h, --help", "show this help and exit");
  for (const auto& n : notes_) out += "\n" + wrap(n, 0, 0) + "\n";
  if (!examples_.empty()) {
    out += "\nexample" + std::string(examples_.size() > 1 ? "s" : "") + ":\n";
    for (const auto& [cmd, comment] : examples_)
      out += "  " + cmd + (comment.empty() ? "" : "\n      " + wrap(comment, 6, 6)) + "\n";
  }
  return out;
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  size_t pos = 0;
  while (true) {
    const size_t sep = text.find_first_of(",x", pos);
    const std::string part = text.substr(pos, sep == std::string::npos ? sep : sep - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != part.size() || v <= 0) {
      throw std::invalid_argument(
          fmt::format("`{}` is not a shape; give positive sizes such as 3,224,224 or 64", text));
    }
    shape.push_back(v);
    if (sep == std::string::npos) break;
    pos = sep + 1;
  }
  return shape;
}

std::string top_level_help(const std::vector<Command>& commands) {
  std::string out =
      "usage: quilt <command> [args]    (quilt help <command>, quilt <command> "
      "--help)\n\ncommands:\n";
  for (const auto& c : commands) out += item(c.name, c.summary);
  out +=
      "\n`quilt run` runs under mpirun with one rank per board:\n"
      "  mpirun -n <boards.count> quilt run experiments/quickstart.yaml\n"
      "\nexit codes: 0 success, 1 a run failed, 2 bad input (the message says where), "
      "3 internal error, 4 interrupted (SIGTERM/SIGINT; --resume continues), 5 the result file "
      "could not be written mid-sweep, 6 a rank stalled (--stall-timeout)\n";
  return out;
}

bool wants_help(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--")) return false;
    if (is_help(argv[i])) return true;
  }
  return false;
}

int dispatch(const std::vector<Command>& commands, int argc, char** argv) {
  std::vector<std::string> names;
  for (const auto& c : commands) names.push_back(c.name);
  auto find = [&](const std::string& name) -> const Command* {
    for (const auto& c : commands)
      if (c.name == name) return &c;
    return nullptr;
  };
  auto unknown = [&](const std::string& name) {
    fmt::print(stderr, "quilt: error: unknown command `{}`{}\n(`quilt --help` lists them)\n", name,
               did_you_mean(name, names, "commands"));
    return kExitUsage;
  };
  if (argc < 2) {
    std::fputs(top_level_help(commands).c_str(), stderr);
    return kExitUsage;
  }
  const std::string cmd = argv[1];
  if (is_help(cmd) || (cmd == "help" && argc == 2)) {
    std::fputs(top_level_help(commands).c_str(), stdout);
    return 0;
  }
  if (cmd == "help") {
    const Command* c = find(argv[2]);
    if (c == nullptr) return unknown(argv[2]);
    std::string help_flag = "--help";
    char* sub_argv[] = {argv[0], argv[2], help_flag.data(), nullptr};
    return c->run(3, sub_argv);
  }
  if (cmd == "--version") {
    if (const Command* c = find("version")) return c->run(2, argv);
  }
  const Command* c = find(cmd);
  if (c == nullptr) return unknown(cmd);
  return c->run(argc, argv);
}

}  // namespace quilt::harness::cli
