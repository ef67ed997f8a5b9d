#pragma once
// The plot llmq-demo writes at the end of a run: an SVG file with the queue's depth (and
// its in-flight requests) over time, and each deployment's share of the requests
// dispatched in each interval, as stacked areas. No dependencies: plain text out.

#include <string>
#include <vector>

namespace llmq::demo {

/// What the demo samples from the gateway's /stats once a second.
struct RunSample {
  double seconds = 0;  ///< since the run started
  double depth = 0;
  double in_flight = 0;
  /// Requests dispatched to each deployment (RunPlot::deployments' order) since the
  /// previous sample.
  std::vector<double> requests;
};

struct RunPlot {
  std::string title;
  std::vector<std::string> deployments;
  std::vector<RunSample> samples;  ///< in time order
};

/// The plot as a standalone SVG document (text is XML-escaped; a sample with fewer
/// request counts than deployments counts the missing ones as 0).
[[nodiscard]] std::string render_svg(const RunPlot& plot);

/// Writes render_svg(plot) to `path`; false when the file cannot be written.
bool write_svg(const RunPlot& plot, const std::string& path);

}  // namespace llmq::demo
