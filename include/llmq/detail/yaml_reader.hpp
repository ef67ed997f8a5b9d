#pragma once
/// @file yaml_reader.hpp
/// The one YAML reader of llmq's settings: the library's configuration (config.hpp),
/// llmq-gateway's `gateway:` section and llmq-mock-azure's file. It loads exactly one
/// document (syntax errors, too deep nesting, an empty text and a second document are
/// errors, never a yaml-cpp exception), views mappings with duplicate and unknown keys
/// detected, reads typed values, and reports every problem the same way:
/// `<key path>: <problem> (line N)`, e.g. `scheduler_limits.policy: must be one of fifo,
/// fair (line 12)`. Throws ConfigError.

#include <llmq/config.hpp>
#include <llmq/errors.hpp>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llmq::detail::yaml {

/// Longest duration accepted for any `*_seconds` key. 1e9 s (about 31.7 years) keeps
/// `now + duration` far inside the range of a nanosecond steady_clock time point.
inline constexpr double kMaxSeconds = 1e9;
inline constexpr std::string_view kPositiveInt = "must be a positive integer";
inline constexpr std::string_view kPositiveSeconds = "must be a positive number of seconds";
inline constexpr std::string_view kNonNegativeSeconds = "must be a non-negative number of seconds";
inline constexpr std::string_view kMinSeconds = "must be at least 0.001 seconds";
inline constexpr std::string_view kMaxSecondsText = "must be at most 1000000000 seconds";
inline constexpr std::string_view kNonNegativeInt = "must be a non-negative integer";
inline constexpr std::string_view kBoolean = "must be true or false";

/// Formats the common error text: `<path>: <problem>` plus ` (line N)` when N > 0.
inline std::string format_problem(std::string_view path, std::string_view problem, int line) {
  std::string out;
  out.reserve(path.size() + problem.size() + 16);
  out.append(path).append(": ").append(problem);
  if (line > 0) out.append(" (line ").append(std::to_string(line)).append(")");
  return out;
}

/// A key from the document as a message shows it: control bytes as \xNN (a NUL would end
/// the message early), at most 64 bytes of it.
inline std::string shown_key(std::string_view key) {
  constexpr std::size_t kMax = 64;
  std::string out;
  for (std::size_t i = 0; i < key.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(key[i]);
    if (c >= 0x20 && c != 0x7f) {
      out += static_cast<char>(c);
      continue;
    }
    constexpr std::string_view hex = "0123456789abcdef";
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 0xf];
  }
  if (key.size() > kMax) out += "...";
  return out;
}

inline std::string child_path(std::string_view parent, std::string_view key) {
  if (parent.empty()) return shown_key(key);
  std::string out(parent);
  out.append(".").append(shown_key(key));
  return out;
}

inline std::string item_path(std::string_view parent, std::size_t index) {
  std::string out(parent);
  out.append("[").append(std::to_string(index)).append("]");
  return out;
}

/// 1-based line of a node, 0 when yaml-cpp has none.
inline int line_of(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

/// Key path -> 1-based line of that key in the YAML text.
using LineTable = std::unordered_map<std::string, int>;

/// The recorded line of `path`, else of its closest recorded ancestor; 0 if none.
inline int line_of_path(const LineTable& lines, std::string path) {
  while (!path.empty()) {
    if (auto it = lines.find(path); it != lines.end()) return it->second;
    const std::size_t cut = path.find_last_of(".[");
    if (cut == std::string::npos || cut == 0) break;
    path.resize(cut);
  }
  return 0;
}

/// Counts the documents of a YAML text without building nodes, and notes where each
/// starts and where the second one's content is (for the "found N" error).
class DocumentCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    ++documents;
    start = mark;
    content_pending = documents == 2;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { content(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { content(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    content(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    content(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    content(mark);
  }
  void OnMapEnd() override {}

  int documents = 0;
  YAML::Mark start;           ///< of the last document started
  YAML::Mark second_content;  ///< first node of the second document

 private:
  void content(const YAML::Mark& mark) {
    if (content_pending) second_content = mark;
    content_pending = false;
  }
  bool content_pending = false;
};

/// A mapping's entries by key, with bookkeeping for unknown and duplicate keys.
struct MappingView {
  struct Entry {
    YAML::Node key;
    YAML::Node value;
    bool used = false;
  };

  std::vector<std::pair<std::string, Entry>> entries;  // document order
  std::unordered_map<std::string, std::size_t> index;  // key -> position in entries
  std::string path;
  int line = 0;

  /// The entry for `name`, or nullptr when the key is absent or its value is null.
  /// Marks the key as known either way.
  Entry* find(std::string_view name) {
    const auto it = index.find(std::string(name));
    if (it == index.end()) return nullptr;
    Entry& entry = entries[it->second].second;
    entry.used = true;
    return entry.value.IsNull() ? nullptr : &entry;
  }
};

/// Reads one settings document. `root_name` names the whole document in errors
/// ("config", "gateway", "mock config"); `expand_env`: scalars go through
/// llmq::expand_environment.
class Reader {
 public:
  explicit Reader(std::string root_name, bool expand_env = true)
      : root_(std::move(root_name)), expand_env_(expand_env) {}

  /// The document's root node. Exactly one non-empty document, else ConfigError.
  YAML::Node load(std::string_view text) {
    const std::string owned(text);
    YAML::Node root;
    DocumentCount documents;
    try {
      documents = count_documents(owned);
      root = YAML::Load(owned);
    } catch (const YAML::DeepRecursion& e) {
      throw ConfigError(format_problem(root_, "YAML nesting is too deep",
                                       e.mark.is_null() ? 0 : e.mark.line + 1));
    } catch (const YAML::ParserException& e) {
      std::string problem = "YAML syntax error";
      if (!e.mark.is_null()) problem += " at column " + std::to_string(e.mark.column + 1);
      problem += ": " + e.msg;
      throw ConfigError(format_problem(root_, problem, e.mark.is_null() ? 0 : e.mark.line + 1));
    } catch (const YAML::Exception& e) {
      throw ConfigError(format_problem(root_, std::string("cannot parse YAML: ") + e.msg,
                                       e.mark.is_null() ? 0 : e.mark.line + 1));
    }
    if (documents.documents == 0 || root.IsNull()) {
      throw ConfigError(format_problem(root_, "the document is empty", 1));
    }
    if (documents.documents > 1) {
      throw ConfigError(format_problem(
          root_, "expected one YAML document, found " + std::to_string(documents.documents),
          documents.second_line));
    }
    return root;
  }

  /// Key path -> line of every key read so far.
  [[nodiscard]] const LineTable& lines() const noexcept { return lines_; }
  /// The unknown keys warned about so far, as `<path>: unknown key (line N)`.
  [[nodiscard]] std::vector<std::string> take_warnings() { return std::move(warnings_); }

  /// Fails with the unknown key of `map` that no reader asked for, if any; `hint` is
  /// appended to the problem ("unknown key (<hint>)").
  void reject_unknown(const MappingView& map, std::string_view hint) const {
    for (const auto& [key, entry] : map.entries) {
      if (entry.used) continue;
      std::string problem = "unknown key";
      if (!hint.empty()) problem.append(" (").append(hint).append(")");
      fail(child_path(map.path, key), problem, line_of(entry.key));
    }
  }

  /// `text` as a decimal integer (an optional leading '+'); nullopt when it is not one,
  /// with `overflow` set when it is one that does not fit in 64 bits.
  static std::optional<std::int64_t> parse_integer(std::string_view text, bool& overflow) {
    if (text.starts_with('+')) text.remove_prefix(1);
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    overflow = ec == std::errc::result_out_of_range;
    if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return value;
  }

  /// `text` as a finite decimal number (an optional leading '+'), else nullopt.
  static std::optional<double> parse_number(std::string_view text) {
    if (text.starts_with('+')) text.remove_prefix(1);
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty() ||
        !std::isfinite(value))
      return std::nullopt;
    return value;
  }

  /// An integer in [min, max]; `problem` when it is not one.
  std::int64_t read_integer_in(const MappingView& map, std::string_view key,
                               const MappingView::Entry& entry, std::int64_t min, std::int64_t max,
                               std::string_view problem) {
    bool overflow = false;
    const auto value = parse_integer(scalar_text(map, key, entry, problem), overflow);
    if (!value || *value < min || *value > max)
      fail(child_path(map.path, key), problem, line_of(entry.key));
    return *value;
  }

  /// A number of seconds in [min_seconds, max_seconds] (fractions allowed), rounded to
  /// milliseconds; `problem` when it is not one.
  std::chrono::milliseconds read_seconds_in(const MappingView& map, std::string_view key,
                                            const MappingView::Entry& entry, double min_seconds,
                                            double max_seconds, std::string_view problem) {
    const auto seconds = parse_number(scalar_text(map, key, entry, problem));
    if (!seconds || *seconds < min_seconds || *seconds > max_seconds)
      fail(child_path(map.path, key), problem, line_of(entry.key));
    return std::chrono::milliseconds{std::llround(*seconds * 1000.0)};
  }

  [[noreturn]] static void fail(std::string_view path, std::string_view problem, int line) {
    throw ConfigError(format_problem(path, problem, line));
  }

  /// How many documents a text holds, and where the second one's content starts.
  struct DocumentCount {
    int documents = 0;
    int second_line = 0;
  };

  /// The number of documents in `text` (YAML::LoadAll would say the same, but it never
  /// returns when a document starts with a ',': yaml-cpp then begins one empty document
  /// after another without consuming the comma). Such a ',' is reported as a syntax
  /// error; the count stops at kMaxDocuments.
  DocumentCount count_documents(const std::string& text) const {
    static constexpr int kMaxDocuments = 100;
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentCounter counter;
    while (counter.documents < kMaxDocuments && parser.HandleNextDocument(counter)) {
      const YAML::Mark& at = counter.start;
      if (at.pos >= 0 && static_cast<std::size_t>(at.pos) < text.size() && text[at.pos] == ',') {
        fail(root_,
             "YAML syntax error at column " + std::to_string(at.column + 1) +
                 ": ',' outside a flow collection",
             at.line + 1);
      }
    }
    DocumentCount count{counter.documents, 0};
    if (counter.documents > 1) count.second_line = counter.second_content.line + 1;
    return count;
  }

  /// Path of an entry of `map`, recording the line of its key.
  std::string key_path(const MappingView& map, std::string_view key,
                       const MappingView::Entry& entry) {
    std::string path = child_path(map.path, key);
    lines_[path] = line_of(entry.key);
    return path;
  }

  MappingView view_mapping(const YAML::Node& node, const std::string& path, int line) {
    // The top level has the empty path (its keys have no prefix) and is called root_.
    const std::string shown = path.empty() ? std::string(root_) : path;
    if (!node.IsMap()) fail(shown, "must be a mapping", line);
    MappingView view;
    view.path = path;
    view.line = line;
    lines_.emplace(shown, line);
    for (const auto& kv : node) {
      const int key_line = line_of(kv.first);
      if (!kv.first.IsScalar()) fail(shown, "mapping keys must be plain strings", key_line);
      const std::string& key = kv.first.Scalar();
      const auto [it, inserted] = view.index.emplace(key, view.entries.size());
      if (!inserted) {
        const int first_line = line_of(view.entries[it->second].second.key);
        fail(child_path(path, key),
             "duplicate key (first given at line " + std::to_string(first_line) + ")", key_line);
      }
      view.entries.emplace_back(key, MappingView::Entry{kv.first, kv.second, false});
    }
    return view;
  }

  /// Warns about every key of `map` that no reader asked for.
  void warn_unknown(const MappingView& map) {
    for (const auto& [key, entry] : map.entries) {
      if (entry.used) continue;
      warnings_.push_back(
          format_problem(child_path(map.path, key), "unknown key", line_of(entry.key)));
    }
  }

  /// The value of a required key, or an "is required" error at the mapping's line.
  MappingView::Entry& require(MappingView& map, std::string_view key) {
    MappingView::Entry* entry = map.find(key);
    if (entry == nullptr) fail(child_path(map.path, key), "is required", map.line);
    return *entry;
  }

  /// `${VAR}` expansion of scalars (the library's and the gateway's settings; not the
  /// mock's), through llmq::expand_environment.
  std::string expand_env(std::string_view in, const std::string& path, int line) const {
    return expand_env_ ? expand_environment(in, path, line) : std::string(in);
  }

  /// A scalar's text after `${VAR}` expansion; `type_problem` if it is not a scalar.
  std::string scalar_text(const MappingView& map, std::string_view key,
                          const MappingView::Entry& entry, std::string_view type_problem) {
    const std::string path = key_path(map, key, entry);
    const int line = line_of(entry.key);
    if (!entry.value.IsScalar()) fail(path, type_problem, line);
    return expand_env(entry.value.Scalar(), path, line);
  }

  std::string read_string(const MappingView& map, std::string_view key,
                          const MappingView::Entry& entry) {
    return scalar_text(map, key, entry, "must be a string");
  }

  std::int64_t read_positive_int(const MappingView& map, std::string_view key,
                                 const MappingView::Entry& entry) {
    return read_integer(map, key, entry, /*allow_zero=*/false);
  }

  std::int64_t read_non_negative_int(const MappingView& map, std::string_view key,
                                     const MappingView::Entry& entry) {
    return read_integer(map, key, entry, /*allow_zero=*/true);
  }

  std::int64_t read_integer(const MappingView& map, std::string_view key,
                            const MappingView::Entry& entry, bool allow_zero) {
    const std::string_view problem = allow_zero ? kNonNegativeInt : kPositiveInt;
    const std::string text = scalar_text(map, key, entry, problem);
    const std::string path = child_path(map.path, key);
    const int line = line_of(entry.key);
    bool overflow = false;
    const auto value = parse_integer(text, overflow);
    if (overflow) fail(path, "is too large (must fit in a signed 64-bit integer)", line);
    if (!value || *value < 0 || (!allow_zero && *value == 0)) fail(path, problem, line);
    return *value;
  }

  /// One of `choices` (their spelling, exact); returns its index.
  std::size_t read_choice(const MappingView& map, std::string_view key,
                          const MappingView::Entry& entry,
                          std::initializer_list<std::string_view> choices,
                          std::string_view choice_text) {
    const std::string problem = std::string("must be one of ").append(choice_text);
    const std::string text = scalar_text(map, key, entry, problem);
    std::size_t index = 0;
    for (std::string_view c : choices) {
      if (text == c) return index;
      ++index;
    }
    fail(child_path(map.path, key), problem, line_of(entry.key));
  }

  bool read_bool(const MappingView& map, std::string_view key, const MappingView::Entry& entry) {
    const std::string text = scalar_text(map, key, entry, kBoolean);
    if (text == "true") return true;
    if (text == "false") return false;
    fail(child_path(map.path, key), kBoolean, line_of(entry.key));
  }

  /// A number of seconds (fractions allowed), rounded to milliseconds.
  std::chrono::milliseconds read_seconds(const MappingView& map, std::string_view key,
                                         const MappingView::Entry& entry, bool allow_zero) {
    const std::string_view sign_problem = allow_zero ? kNonNegativeSeconds : kPositiveSeconds;
    const std::string text = scalar_text(map, key, entry, sign_problem);
    const std::string path = child_path(map.path, key);
    const int line = line_of(entry.key);
    const auto parsed = parse_number(text);
    if (!parsed) fail(path, sign_problem, line);
    const double seconds = *parsed;
    if (seconds < 0 || (!allow_zero && seconds == 0)) fail(path, sign_problem, line);
    if (seconds > kMaxSeconds) fail(path, kMaxSecondsText, line);
    const std::chrono::milliseconds ms{std::llround(seconds * 1000.0)};
    if (!allow_zero && ms.count() < 1) fail(path, kMinSeconds, line);
    return ms;
  }

  /// The items of a list-valued key (absent or null -> empty); `list_problem` when the
  /// value is not a list.
  std::vector<std::pair<YAML::Node, std::string>> read_list(
      MappingView& map, std::string_view key, std::string_view list_problem = "must be a list") {
    std::vector<std::pair<YAML::Node, std::string>> items;
    MappingView::Entry* entry = map.find(key);
    if (entry == nullptr) return items;
    const std::string path = key_path(map, key, *entry);
    if (!entry->value.IsSequence()) fail(path, list_problem, line_of(entry->key));
    std::size_t index = 0;
    for (const auto& item : entry->value) {
      std::string ip = item_path(path, index++);
      lines_[ip] = line_of(item);
      items.emplace_back(item, std::move(ip));
    }
    return items;
  }

  /// The strings of a list-valued key (absent or null -> empty), each `${VAR}`-expanded;
  /// `list_problem` when the value is not a list, "must be a string" for an item that is
  /// not a scalar and, with `non_empty`, "must not be empty" for an empty one.
  std::vector<std::string> read_string_list(MappingView& map, std::string_view key,
                                            std::string_view list_problem, bool non_empty) {
    std::vector<std::string> out;
    for (const auto& [item, path] : read_list(map, key, list_problem)) {
      if (!item.IsScalar()) fail(path, "must be a string", line_of(item));
      std::string text = expand_env(item.Scalar(), path, line_of(item));
      if (non_empty && text.empty()) fail(path, "must not be empty", line_of(item));
      out.push_back(std::move(text));
    }
    return out;
  }

  /// The entry of `key` or of its alias; both present is an error.
  MappingView::Entry* find_with_alias(MappingView& map, std::string_view key,
                                      std::string_view alias, std::string_view* used_key) {
    MappingView::Entry* primary = map.find(key);
    MappingView::Entry* secondary = map.find(alias);
    if (primary != nullptr && secondary != nullptr) {
      fail(child_path(map.path, alias),
           std::string("is an alias of ").append(key).append("; give only one of them"),
           line_of(secondary->key));
    }
    *used_key = primary != nullptr ? key : alias;
    return primary != nullptr ? primary : secondary;
  }

 private:
  std::string root_;
  bool expand_env_;
  LineTable lines_;
  std::vector<std::string> warnings_;
};

}  // namespace llmq::detail::yaml
