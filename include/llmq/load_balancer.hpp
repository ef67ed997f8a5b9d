#pragma once
/// @file load_balancer.hpp
/// Smooth weighted round-robin over deployments that respects each deployment's
/// sliding RPM and TPM windows, paces requests to Azure's 1 s / 10 s enforcement, backs
/// off after failures, and serves the best priority group with room first (spilling
/// over to the next group only when it has none). A decision core: no I/O, time passed
/// in.

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace llmq {

/// Limits of one deployment as the balancer sees them.
struct DeploymentLimits {
  std::int64_t req_per_min = 0;     ///< > 0
  std::int64_t tokens_per_min = 0;  ///< > 0
  std::chrono::nanoseconds error_backoff{std::chrono::seconds(60)};
  std::int64_t weight = 1;  ///< > 0
  /// Also cap requests per 1 s (req_per_min/60) and per 10 s (req_per_min/6), each at
  /// least 1, as Azure enforces RPM over those short windows.
  bool pace_short_windows = true;
  /// Each charge stays in its windows this much longer than the window's length, so that
  /// network jitter between dispatch here and arrival upstream cannot squeeze one more
  /// request into the upstream's window. Zero keeps windows exact.
  std::chrono::nanoseconds window_margin{0};
  /// Priority group, >= 0: among a request's candidates, the group with the lowest value
  /// that has a deployment with room serves it (e.g. provisioned deployments at 0,
  /// pay-as-you-go at 1); the next group only when that one has none.
  std::int64_t priority = 0;
};

/// What one request costs a deployment.
struct DeploymentNeed {
  std::int64_t calls = 1;   ///< upstream calls (num_*_calls_per_req)
  std::int64_t tokens = 0;  ///< estimated tokens for all those calls
};

/// A charge made against one deployment; pass it back to `reconcile`.
struct DeploymentGrant {
  std::size_t deployment = 0;
  std::uint64_t seq = 0;
  DeploymentNeed need;
  /// The request spilled over: a better priority group among its candidates had no room.
  bool spilled = false;
};

/// Point-in-time view of one deployment.
struct DeploymentState {
  std::int64_t requests_in_window = 0;  ///< calls charged in the last 60 s
  std::int64_t tokens_in_window = 0;    ///< tokens charged in the last 60 s
  std::optional<std::chrono::steady_clock::time_point> backoff_until;  ///< set while in backoff
  std::uint64_t granted = 0;    ///< requests granted since start
  std::uint64_t failures = 0;   ///< failures reported since start
  std::uint64_t throttled = 0;  ///< of which 429s
  std::uint64_t spilled = 0;    ///< grants that spilled over to this deployment
  /// Requests granted after they were held for a window (see count_paced): each one a call
  /// that, sent when it arrived, would have exceeded a window the upstream enforces.
  std::uint64_t paced = 0;
};

/// Thread safety: none; callers serialise (LLMQueue keeps it on one strand).
///
/// Cost: `pick` and `commit` are O((1 + k) log n) for a set of n candidates, k of which
/// have room for some requests but not for this one (a full token window, several calls
/// per request), plus O(log n) per deployment whose backoff ended or whose call windows
/// reopened. The round-robin state of a candidate set is a kinetic tournament tree over
/// lines `current + weight * round`, so nothing is done per candidate per pick. Passing
/// a span (instead of a registered CandidateSet) adds a hash lookup of the span, O(n)
/// with a small constant.
class WeightedRoundRobinBalancer {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  /// A registered candidate set (see `candidate_set`).
  struct CandidateSet {
    std::uint32_t id = 0;
  };

  /// Outcome of `pick`: the chosen deployment, valid for one `commit` at the same `now`.
  struct Selection {
    std::size_t deployment = 0;
    std::uint64_t epoch = 0;
    std::int64_t eligible_weight = 0;  ///< weight of the eligible deployments of its group
    bool spilled = false;              ///< served by a group other than the best one
    std::uint32_t set = 0;
    std::uint32_t set_generation = 0;
    std::uint32_t group = 0;
  };

  /// Weights above this are rejected (std::invalid_argument).
  static constexpr std::int64_t kMaxWeight = std::int64_t{1} << 32;

  explicit WeightedRoundRobinBalancer(std::vector<DeploymentLimits> limits);

  [[nodiscard]] std::size_t size() const noexcept { return states_.size(); }

  /// Registers `candidates` (indexes into the limits vector; duplicates count once, the
  /// first occurrence's position breaks ties) and returns its handle, valid for the
  /// balancer's lifetime. Registering the same list again returns the same handle. Each
  /// set keeps its own round-robin state; deployments (windows, backoff) are shared.
  CandidateSet candidate_set(std::span<const std::size_t> candidates);

  /// Chooses among the candidates the deployment smooth weighted round-robin gives next
  /// among those eligible for `need` at `now`, in the best priority group that has one;
  /// nothing is charged until `commit`. Nullopt when no candidate is eligible.
  /// `need.calls` below 1 counts as 1.
  std::optional<Selection> pick(CandidateSet set, DeploymentNeed need, time_point now);
  /// The same for an unregistered list (looked up, and registered on first use; at most
  /// kMaxCachedSets such lists are kept, least recently used first out).
  std::optional<Selection> pick(std::span<const std::size_t> candidates, DeploymentNeed need,
                                time_point now);

  /// Charges `need` to the selected deployment and advances the round-robin state.
  DeploymentGrant commit(const Selection& s, DeploymentNeed need, time_point now);
  /// The same; `candidates` is the list given to `pick` (used only if that list has
  /// been dropped from the cache since).
  DeploymentGrant commit(std::span<const std::size_t> candidates, const Selection& s,
                         DeploymentNeed need, time_point now);

  /// pick + commit.
  std::optional<DeploymentGrant> acquire(CandidateSet set, DeploymentNeed need, time_point now);
  std::optional<DeploymentGrant> acquire(std::span<const std::size_t> candidates,
                                         DeploymentNeed need, time_point now);

  /// Replaces a grant's estimated tokens by the tokens actually used (if the grant is
  /// still inside the 60 s window). Ignored when `actual_tokens` <= 0.
  void reconcile(const DeploymentGrant& g, std::int64_t actual_tokens);

  /// Takes a grant back (its calls and tokens leave every window), e.g. when a shared
  /// budget refused what this balancer granted. The round-robin position is kept.
  void refund(const DeploymentGrant& g);

  /// The deployment failed (5xx, 429, connection error): skip it until
  /// `now + retry_after` when given (an upstream Retry-After), else `now + error_backoff`.
  void report_failure(std::size_t deployment, time_point now,
                      std::optional<clock::duration> retry_after, bool throttled);

  /// Keeps the deployment out of rotation until `until` without counting a failure
  /// (e.g. the upstream said it has no requests or tokens left until a reset).
  void hold(std::size_t deployment, time_point until);

  /// Earliest time at which some candidate could be eligible for `need`
  /// (== now if one is eligible now; time_point::max() if none ever can be). O(n).
  [[nodiscard]] time_point next_eligible(std::span<const std::size_t> candidates,
                                         DeploymentNeed need, time_point now);

  [[nodiscard]] DeploymentState state(std::size_t deployment, time_point now);

  /// After a `pick` among `candidates` found none at `now`: true when some candidate was
  /// not backing off, so that the request is held for room in a window (pacing) rather
  /// than only for backoffs to end. O(n); nothing changes.
  [[nodiscard]] bool held_for_windows(std::span<const std::size_t> candidates,
                                      time_point now) const;
  /// Counts a request granted `deployment` after it was held for a window
  /// (DeploymentState::paced). O(1).
  void count_paced(std::size_t deployment);

  /// Takes over deployment `from_deployment` of `from` as `deployment` of this balancer:
  /// its charges of the last minute, its backoff and its counters, under this balancer's
  /// limits for it (windows are recounted from the charges as of `now`). For a new
  /// configuration of the same deployments; call before any candidate set is registered
  /// here. A grant `from` made on that deployment stays valid here with `deployment` set
  /// to the new index. `from` must not use that deployment afterwards.
  void take_over(std::size_t deployment, WeightedRoundRobinBalancer& from,
                 std::size_t from_deployment, time_point now);

  /// Unregistered candidate lists kept at most.
  static constexpr std::size_t kMaxCachedSets = 256;

 private:
  // 16 bytes: a deployment's last minute of charges is read back as they leave their
  // windows, so the log's size in cache lines matters. One charge holds at most
  // 2^31 - 1 calls and tokens (larger values are clamped).
  struct Charge {
    time_point at;
    std::int32_t calls;
    std::int32_t tokens;
  };
  // Charges by sequence number, oldest first: a ring of power-of-two capacity.
  class ChargeLog {
   public:
    [[nodiscard]] std::uint64_t base() const noexcept { return base_; }
    [[nodiscard]] std::uint64_t end() const noexcept { return base_ + size_; }
    [[nodiscard]] bool holds(std::uint64_t seq) const noexcept {
      return seq >= base_ && seq < end();
    }
    Charge& operator[](std::uint64_t seq) noexcept { return ring_[seq & mask_]; }
    const Charge& operator[](std::uint64_t seq) const noexcept { return ring_[seq & mask_]; }
    void push_back(const Charge& c);
    void pop_front() noexcept {
      ++base_;
      --size_;
    }

   private:
    std::vector<Charge> ring_;
    std::uint64_t mask_ = 0;
    std::uint64_t base_ = 0;
    std::uint64_t size_ = 0;
  };
  // A sliding window over the deployment's charge log.
  struct Window {
    clock::duration length;
    std::int64_t call_limit;
    std::uint64_t cursor = 0;  // seq of the oldest charge inside
    std::int64_t calls = 0;
    std::int64_t tokens = 0;
    time_point next_leave = time_point::max();  // when the charge at cursor leaves
  };
  struct Membership {
    std::uint32_t set;
    std::uint32_t group;
    std::uint32_t leaf;
  };
  struct State {
    DeploymentLimits limits;
    ChargeLog log;
    std::vector<Window> windows;  // windows[0] is the 60 s window (also holds tokens)
    time_point backoff_until{};
    time_point advanced_to{};  // windows are current as of this time
    DeploymentState counters;
    // What fits, as of the last refresh (never more than what truly fits: windows only
    // empty between refreshes). A window with nothing in it fits anything.
    std::int64_t call_room = 0;
    std::int64_t token_room = 0;
    bool in_backoff = false;
    bool out = false;            // in backoff, or no room for one call: out of every tree
    std::uint32_t wake_pos = 0;  // position in wake_heap_ + 1 (0: not there)
    time_point wake_at{};
    std::vector<Membership> memberships;
  };
  struct Member {
    std::size_t deployment = 0;
    std::int64_t weight = 1;
    std::int64_t offset = 0;   // current = weight * round + offset while in the tree
    std::int64_t current = 0;  // while out of the tree
    bool in = false;
    std::uint64_t failing_epoch = 0;
  };
  struct Node {
    std::uint32_t winner;
    std::uint32_t loser;  // the other child's winner (kNone if that side is empty)
    std::int64_t weight;  // the winner's line: weight * t + offset
    std::int64_t offset;
    std::int64_t fail;      // round at which the loser overtakes the winner
    std::int64_t sub_fail;  // min of fail over the subtree
    std::int64_t min_call;  // min call_room over the subtree's members in the tree
    std::int64_t min_token;
  };
  struct Group {
    std::int64_t priority = 0;
    std::vector<Member> members;  // in candidate order: a member's index breaks ties
    std::uint32_t leaves = 1;     // power of two >= members.size()
    std::vector<Node> tree;       // 1-based heap layout, leaves at [leaves, 2 * leaves)
    std::int64_t round = 0;
    std::int64_t in_weight = 0;
    std::uint32_t in_count = 0;
    std::int64_t max_weight = 1;
    std::int64_t rebase_at = 1;       // round at which offsets are rebased
    std::uint64_t failing_epoch = 0;  // epoch of `failing`
    std::vector<std::uint32_t> failing;
    std::int64_t failing_weight = 0;
    // Before this time no member can take a need as large as full_need (none could, and
    // no window of theirs has emptied since; anything else that frees room resets it).
    time_point full_until{};
    DeploymentNeed full_need;
  };
  struct Set {
    std::vector<std::size_t> key;  // as registered (lookup key)
    std::vector<Group> groups;     // by priority, best first
    std::uint32_t generation = 0;
    bool pinned = false;  // registered through candidate_set()
    bool live = false;
    std::uint64_t last_used = 0;
  };
  struct SpanHash {
    using is_transparent = void;
    std::size_t operator()(std::span<const std::size_t> s) const noexcept;
    std::size_t operator()(const std::vector<std::size_t>& v) const noexcept {
      return (*this)(std::span<const std::size_t>(v));
    }
  };
  struct SpanEqual {
    using is_transparent = void;
    bool operator()(std::span<const std::size_t> a, std::span<const std::size_t> b) const noexcept;
  };

  std::uint32_t find_or_add_set(std::span<const std::size_t> candidates, bool pin);
  void drop_set(std::uint32_t id);
  std::optional<Selection> pick_in(std::uint32_t set, DeploymentNeed need, time_point now);
  DeploymentGrant charge(std::size_t deployment, DeploymentNeed need, time_point now, bool spilled,
                         const Membership* updated_by_caller);
  void collect_failing(Group& g, DeploymentNeed need, time_point now, std::uint64_t epoch);
  std::uint32_t best_fitting(const Group& g, std::uint64_t epoch) const;
  void remember_full(Group& g, DeploymentNeed need);

  void sync(time_point now);
  void advance(State& s, time_point now);
  void refresh(std::size_t d, time_point now);
  void update_rooms(std::size_t d, const Membership* skip = nullptr);
  void update_standing(std::size_t d);
  void set_in(std::size_t d, bool in);
  void schedule_wake(std::size_t d, std::optional<time_point> at);
  time_point next_fit(State& s, DeploymentNeed need, time_point now);

  void update_leaf(Group& g, std::uint32_t leaf);
  void recompute(Group& g, std::uint32_t node, std::int64_t t) const;
  static void certify(Group& g, std::uint32_t node, std::int64_t t);
  void catch_up(Group& g, std::int64_t t);
  void rebase(Group& g);

  void wake_swap(std::uint32_t a, std::uint32_t b);
  void wake_sift_up(std::uint32_t pos);
  void wake_sift_down(std::uint32_t pos);
  void wake_erase(std::size_t d);

  std::vector<State> states_;
  std::vector<Set> sets_;
  std::vector<std::uint32_t> free_sets_;
  std::unordered_map<std::vector<std::size_t>, std::uint32_t, SpanHash, SpanEqual> set_index_;
  std::size_t cached_sets_ = 0;
  std::vector<std::uint32_t> wake_heap_;  // deployments that are out, by wake_at
  std::vector<std::uint32_t> stack_;      // scratch for tree walks
  std::uint64_t epoch_ = 0;
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/load_balancer-inl.hpp>
#endif
