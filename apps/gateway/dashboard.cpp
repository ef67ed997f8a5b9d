#include "dashboard.hpp"

#include <algorithm>
#include <chrono>

namespace llmq::gateway {

StatsHistory::StatsHistory(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}

void StatsHistory::record(QueueSample s) {
  std::lock_guard lock(mutex_);
  if (ring_.size() == capacity_) ring_.pop_front();
  ring_.push_back(s);
}

std::vector<QueueSample> StatsHistory::samples() const {
  std::lock_guard lock(mutex_);
  return {ring_.begin(), ring_.end()};
}

void UserCounts::count(const std::string& user, bool admitted) {
  auto it = users_.find(user);
  if (it == users_.end()) {
    if (users_.size() >= kMaxUsers) {
      // O(kMaxUsers), only when a new user arrives with the table full.
      auto fewest =
          std::min_element(users_.begin(), users_.end(), [](const auto& a, const auto& b) {
            return a.second.admitted + a.second.refused < b.second.admitted + b.second.refused;
          });
      users_.erase(fewest);
      ++forgotten_;
    }
    it = users_.emplace(user, Counts{}).first;
  }
  ++(admitted ? it->second.admitted : it->second.refused);
}

std::vector<UserTally> UserCounts::top(std::size_t n, bool by_admitted) const {
  std::vector<UserTally> all;
  all.reserve(users_.size());
  for (const auto& [name, c] : users_)
    if ((by_admitted ? c.admitted : c.refused) > 0)
      all.push_back(UserTally{name, c.admitted, c.refused});
  const auto more = [by_admitted](const UserTally& a, const UserTally& b) {
    const std::uint64_t x = by_admitted ? a.admitted : a.refused;
    const std::uint64_t y = by_admitted ? b.admitted : b.refused;
    return x != y ? x > y : a.user < b.user;
  };
  const std::size_t k = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end(), more);
  all.resize(k);
  return all;
}

std::vector<UserTally> UserCounts::top_admitted(std::size_t n) const { return top(n, true); }
std::vector<UserTally> UserCounts::top_refused(std::size_t n) const { return top(n, false); }

namespace {
nlohmann::json percentiles_json(const Percentiles& p) {
  nlohmann::json j = nlohmann::json::object();
  j["p50"] = p.p50;
  j["p90"] = p.p90;
  j["p99"] = p.p99;
  j["count"] = p.count;
  return j;
}

nlohmann::json users_json(const std::vector<UserTally>& list) {
  nlohmann::json out = nlohmann::json::array();
  for (const UserTally& u : list) {
    nlohmann::json j = nlohmann::json::object();
    j["user"] = u.user;
    j["admitted"] = u.admitted;
    j["refused"] = u.refused;
    out.push_back(std::move(j));
  }
  return out;
}

const Deployment* find_deployment(const DeploymentList& list, const std::string& id) {
  for (const Deployment& d : list)
    if (d.unique_model_id == id) return &d;
  return nullptr;
}
}  // namespace

nlohmann::json stats_document(const QueueStats& s, const DeploymentList& deployments,
                              const DashboardView& view, const std::vector<QueueSample>& samples,
                              double now) {
  nlohmann::json doc = nlohmann::json::object();
  doc["version"] = 1;
  doc["time"] = now;

  nlohmann::json queue = nlohmann::json::object();
  queue["depth"] = s.queue_depth;
  queue["in_flight"] = s.in_flight;
  queue["admitted"] = s.admitted;
  queue["completed"] = s.completed;
  nlohmann::json refused = nlohmann::json::object();
  refused["user_limit"] = s.rejected_user_limit;
  refused["user_queue_full"] = s.rejected_user_queue_full;
  refused["predicted_timeout"] = s.rejected_predicted;
  refused["queue_full"] = s.rejected_queue_full - s.rejected_user_queue_full - s.rejected_predicted;
  refused["invalid"] = s.rejected_invalid;
  refused["queue_timeout"] = s.timed_out;
  refused["cancelled"] = s.cancelled;
  refused["closed"] = s.rejected_closed;
  refused["store_unavailable"] = s.rejected_store;
  queue["refused"] = std::move(refused);
  nlohmann::json by_priority = nlohmann::json::object();
  for (const Priority p : {Priority::high, Priority::normal, Priority::low})
    by_priority[std::string(to_string(p))] = s.queued_by_priority[static_cast<std::size_t>(p)];
  queue["depth_by_priority"] = std::move(by_priority);
  doc["queue"] = std::move(queue);

  nlohmann::json ring = nlohmann::json::array();
  for (const QueueSample& q : samples) {
    nlohmann::json j = nlohmann::json::object();
    j["t"] = q.time;
    j["depth"] = q.depth;
    j["in_flight"] = q.in_flight;
    ring.push_back(std::move(j));
  }
  doc["samples"] = std::move(ring);

  nlohmann::json list = nlohmann::json::array();
  for (const DeploymentStats& d : s.deployments) {
    nlohmann::json j = nlohmann::json::object();
    j["name"] = d.unique_model_id;
    const Deployment* config = find_deployment(deployments, d.unique_model_id);
    j["model"] = config != nullptr ? config->model_name_in_azure : std::string();
    j["type"] = config != nullptr ? std::string(to_string(config->model_type)) : std::string();
    j["priority"] = config != nullptr ? config->priority : 0;
    j["weight"] = config != nullptr ? config->weight : 0;  // req_per_min when not configured
    j["rpm_limit"] = d.req_per_min;
    j["rpm_used"] = d.requests_in_window;
    j["tpm_limit"] = d.tokens_per_min;
    j["tpm_used"] = d.tokens_in_window;
    nlohmann::json backoff = nlohmann::json::object();
    backoff["active"] = d.backoff_remaining.count() > 0;
    backoff["remaining_seconds"] = static_cast<double>(d.backoff_remaining.count()) / 1000.0;
    j["backoff"] = std::move(backoff);
    j["requests"] = d.granted;
    j["failures"] = d.failures;
    j["throttled_429"] = d.throttled;
    j["paced"] = d.paced;
    j["spilled"] = d.spilled;
    const auto tokens = view.tokens.find(d.unique_model_id);
    j["tokens"] = tokens == view.tokens.end() ? 0 : tokens->second;
    list.push_back(std::move(j));
  }
  doc["deployments"] = std::move(list);

  nlohmann::json users = nlohmann::json::object();
  users["top_admitted"] = users_json(view.top_admitted);
  users["top_refused"] = users_json(view.top_refused);
  users["tracked"] = view.users_tracked;
  users["forgotten"] = view.users_forgotten;
  doc["users"] = std::move(users);

  nlohmann::json latency = nlohmann::json::object();
  latency["queue_wait"] = percentiles_json(view.queue_wait);
  latency["upstream"] = percentiles_json(view.upstream);
  latency["total"] = percentiles_json(view.total);
  doc["latency"] = std::move(latency);
  return doc;
}

double unix_seconds_now() {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return static_cast<double>(us.count()) / 1e6;
}

}  // namespace llmq::gateway
