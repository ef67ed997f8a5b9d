#include "run_plot.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>

namespace llmq::demo {
namespace {

std::string escaped(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control bytes are not allowed in XML 1.0 text.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

const char* colour(std::size_t i) {
  static constexpr const char* palette[] = {"#2f6fdf", "#e0862b", "#2e9d57", "#d04b3f",
                                            "#8a5cc7", "#1aa3a3", "#b5932b", "#6b7080"};
  return palette[i % (sizeof palette / sizeof palette[0])];
}

constexpr double kWidth = 900, kLeft = 60, kRight = 180, kPanel = 200, kGap = 60, kTop = 50;

struct Axis {
  double x0, x1, y0, y1;  // pixel box: left, right, top, bottom
  double t_max, v_max;
  [[nodiscard]] double x(double t) const { return x0 + (x1 - x0) * (t_max > 0 ? t / t_max : 0); }
  [[nodiscard]] double y(double v) const { return y1 - (y1 - y0) * (v_max > 0 ? v / v_max : 0); }
};

void frame(std::string& out, const Axis& a, const std::string& label, const std::string& unit) {
  out += "<rect x=\"" + num(a.x0) + "\" y=\"" + num(a.y0) + "\" width=\"" + num(a.x1 - a.x0) +
         "\" height=\"" + num(a.y1 - a.y0) + "\" fill=\"#fff\" stroke=\"#dfe1e6\"/>\n";
  out += "<text x=\"" + num(a.x0) + "\" y=\"" + num(a.y0 - 8) + "\" font-weight=\"bold\">" +
         escaped(label) + "</text>\n";
  for (int k = 0; k <= 4; ++k) {
    const double v = a.v_max * k / 4;
    out += "<text x=\"" + num(a.x0 - 6) + "\" y=\"" + num(a.y(v) + 4) +
           "\" text-anchor=\"end\" fill=\"#6b7080\">" + num(v) + unit + "</text>\n";
  }
  out += "<text x=\"" + num(a.x0) + "\" y=\"" + num(a.y1 + 16) + "\" fill=\"#6b7080\">0 s</text>\n";
  out += "<text x=\"" + num(a.x1) + "\" y=\"" + num(a.y1 + 16) +
         "\" text-anchor=\"end\" fill=\"#6b7080\">" + num(a.t_max) + " s</text>\n";
}

std::string polyline(const std::vector<std::pair<double, double>>& pts, const char* stroke) {
  std::string out = "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"";
  out += stroke;
  out += "\" points=\"";
  for (const auto& [x, y] : pts) out += num(x) + "," + num(y) + " ";
  out += "\"/>\n";
  return out;
}

}  // namespace

std::string render_svg(const RunPlot& plot) {
  const std::vector<RunSample>& s = plot.samples;
  const std::size_t n = plot.deployments.size();
  const double height = kTop + kPanel + kGap + kPanel + 40;
  double t_max = 1, depth_max = 1;
  for (const RunSample& r : s) {
    t_max = std::max(t_max, r.seconds);
    depth_max = std::max({depth_max, r.depth, r.in_flight});
  }
  std::string out;
  out += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(kWidth) + "\" height=\"" +
         num(height) + "\" viewBox=\"0 0 " + num(kWidth) + " " + num(height) +
         "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out += "<rect width=\"100%\" height=\"100%\" fill=\"#f7f7f9\"/>\n";
  out += "<text x=\"" + num(kLeft) + "\" y=\"24\" font-size=\"16\" font-weight=\"bold\">" +
         escaped(plot.title) + "</text>\n";

  // Queue depth and in flight.
  const Axis q{kLeft, kWidth - kRight, kTop, kTop + kPanel, t_max, depth_max};
  frame(out, q, "queue depth and in-flight requests", "");
  std::vector<std::pair<double, double>> depth, flight;
  for (const RunSample& r : s) {
    depth.emplace_back(q.x(r.seconds), q.y(r.depth));
    flight.emplace_back(q.x(r.seconds), q.y(r.in_flight));
  }
  out += "<g id=\"queue-depth\">" + polyline(depth, "#2f6fdf") + "</g>\n";
  out += "<g id=\"in-flight\">" + polyline(flight, "#e0862b") + "</g>\n";
  out += "<text x=\"" + num(q.x1 + 12) + "\" y=\"" + num(q.y0 + 14) +
         "\" fill=\"#2f6fdf\">queue depth</text>\n";
  out += "<text x=\"" + num(q.x1 + 12) + "\" y=\"" + num(q.y0 + 32) +
         "\" fill=\"#e0862b\">in flight</text>\n";

  // Each deployment's share of the requests dispatched in each interval, stacked.
  const double y0 = kTop + kPanel + kGap;
  const Axis d{kLeft, kWidth - kRight, y0, y0 + kPanel, t_max, 100};
  frame(out, d, "share of requests by deployment", "%");
  // Intervals in which nothing was dispatched have no shares: they are left out.
  std::vector<std::size_t> with_requests;
  std::vector<double> totals;
  for (std::size_t i = 0; i < s.size(); ++i) {
    double total = 0;
    for (double v : s[i].requests) total += std::max(0.0, v);
    if (total <= 0) continue;
    with_requests.push_back(i);
    totals.push_back(total);
  }
  std::vector<double> below(with_requests.size(), 0);  // share under the current band
  for (std::size_t k = 0; k < n; ++k) {
    std::vector<double> share(with_requests.size(), 0);
    for (std::size_t j = 0; j < with_requests.size(); ++j) {
      const RunSample& r = s[with_requests[j]];
      const double v = k < r.requests.size() ? std::max(0.0, r.requests[k]) : 0;
      share[j] = 100 * v / totals[j];
    }
    std::string points;
    for (std::size_t j = 0; j < with_requests.size(); ++j)
      points += num(d.x(s[with_requests[j]].seconds)) + "," + num(d.y(below[j] + share[j])) + " ";
    for (std::size_t j = with_requests.size(); j-- > 0;)
      points += num(d.x(s[with_requests[j]].seconds)) + "," + num(d.y(below[j])) + " ";
    for (std::size_t j = 0; j < with_requests.size(); ++j) below[j] += share[j];
    out += "<polygon class=\"share\" fill=\"";
    out += colour(k);
    out += "\" fill-opacity=\"0.85\" points=\"" + points + "\"><title>" +
           escaped(plot.deployments[k]) + "</title></polygon>\n";
    out += "<rect x=\"" + num(d.x1 + 12) + "\" y=\"" + num(d.y0 + 18.0 * static_cast<double>(k)) +
           "\" width=\"10\" height=\"10\" fill=\"" + colour(k) + "\"/>\n";
    out += "<text x=\"" + num(d.x1 + 28) + "\" y=\"" +
           num(d.y0 + 9 + 18.0 * static_cast<double>(k)) + "\">" + escaped(plot.deployments[k]) +
           "</text>\n";
  }
  out += "</svg>\n";
  return out;
}

bool write_svg(const RunPlot& plot, const std::string& path) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return false;
  f << render_svg(plot);
  return static_cast<bool>(f.flush());
}

}  // namespace llmq::demo
