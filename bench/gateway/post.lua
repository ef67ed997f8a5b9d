-- wrk script: one chat completion per request, users spread over 64 ids. The 64
-- requests are formatted once (init); each call hands out the next, so wrk spends its
-- CPU on sending rather than on building strings (it shares the cores with the servers).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = "bench-upstream-key"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello, world!"}],"max_tokens":16}'
local requests = {}
local n = 0
init = function(args)
  for i = 0, 63 do
    wrk.headers["x-user-id"] = "user-" .. i
    requests[i] = wrk.format(nil, wrk.path)
  end
end
request = function()
  n = n + 1
  return requests[n % 64]
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests/s %.0f p50_us %d p99_us %d errors %d non2xx %d requests %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.requests))
  -- The latency distribution, for bench/gateway/plot_latency.sh: one line per percentile.
  if os.getenv("LLMQ_BENCH_PERCENTILES") then
    for _, p in ipairs({1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99}) do
      io.write(string.format("PERCENTILE %g %d\n", p, latency:percentile(p)))
    end
  end
end
