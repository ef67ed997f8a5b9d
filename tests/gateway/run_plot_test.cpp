// The SVG plot llmq-demo writes at the end of a run (apps/demo/run_plot.hpp).
#include "run_plot.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

llmq::demo::RunPlot sample_plot() {
  llmq::demo::RunPlot p;
  p.title = "llmq demo <run> & co";
  p.deployments = {"gpt-4o-east", "gpt-4o-west", "embed-1"};
  for (int i = 0; i <= 10; ++i) {
    llmq::demo::RunSample s;
    s.seconds = i;
    s.depth = i < 5 ? 2.0 * i : 0;
    s.in_flight = 4;
    s.requests = {3, i < 5 ? 3.0 : 0.0, 1};
    p.samples.push_back(s);
  }
  return p;
}

TEST(RunPlot, RendersAStandaloneSvgWithBothPanels) {
  const std::string svg = llmq::demo::render_svg(sample_plot());
  EXPECT_EQ(
      svg.rfind(
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"",
          0),
      0u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  EXPECT_EQ(count(svg, "<svg"), 1u);
  EXPECT_NE(svg.find("queue depth and in-flight requests"), std::string::npos);
  EXPECT_NE(svg.find("share of requests by deployment"), std::string::npos);
  EXPECT_EQ(count(svg, "<polygon class=\"share\""), 3u);  // one band per deployment
  for (const char* d : {"gpt-4o-east", "gpt-4o-west", "embed-1"})
    EXPECT_GE(count(svg, std::string(">") + d + "<"), 2u) << d;  // legend and band title
  // Text is escaped: the title's markup characters do not open elements.
  EXPECT_NE(svg.find("llmq demo &lt;run&gt; &amp; co"), std::string::npos);
  EXPECT_EQ(svg.find("<run>"), std::string::npos);
  // Every element that opens is closed (no nesting mistakes in the writer).
  EXPECT_EQ(count(svg, "<g "), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
  EXPECT_EQ(count(svg, "<polygon"), count(svg, "</polygon>"));
  EXPECT_NE(svg.find("<g id=\"queue-depth\"><polyline"), std::string::npos);
  // The shares add up: the top band reaches 100 % (the panel's top, y = 310) at each of
  // the 11 samples.
  const std::string last_band = svg.substr(svg.rfind("<polygon"));
  EXPECT_EQ(count(last_band, ",310.0 "), 11u) << last_band;
}

TEST(RunPlot, EmptyRunsAndMissingCountsStillRender) {
  llmq::demo::RunPlot p;
  p.deployments = {"a", "b"};
  const std::string empty = llmq::demo::render_svg(p);
  EXPECT_NE(empty.find("</svg>"), std::string::npos);
  p.samples.push_back(llmq::demo::RunSample{1, 0, 0, {}});   // no counts at all
  p.samples.push_back(llmq::demo::RunSample{2, 1, 1, {5}});  // fewer than deployments
  const std::string svg = llmq::demo::render_svg(p);
  EXPECT_EQ(count(svg, "<polygon class=\"share\""), 2u);
  // The interval without requests has no shares: only t=2 is drawn (x = 60 + 660 * 2/2).
  const std::string first_band = svg.substr(svg.find("<polygon"));
  EXPECT_NE(first_band.find("points=\"720.0,310.0 720.0,510.0 \""), std::string::npos)
      << first_band;
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

TEST(RunPlot, WritesTheFileItIsGiven) {
  const auto path = std::filesystem::temp_directory_path() / "llmq-run-plot-test.svg";
  ASSERT_TRUE(llmq::demo::write_svg(sample_plot(), path.string()));
  std::ifstream f(path);
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_EQ(text.str(), llmq::demo::render_svg(sample_plot()));
  std::filesystem::remove(path);
  EXPECT_FALSE(llmq::demo::write_svg(sample_plot(), "/nonexistent-dir/plot.svg"));
}

}  // namespace
