-- wrk script: one chat completion per request, users spread over 64 ids.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["api-key"] = "bench-upstream-key"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello, world!"}],"max_tokens":16}'
local n = 0
request = function()
  n = n + 1
  wrk.headers["x-user-id"] = "user-" .. (n % 64)
  return wrk.format(nil, wrk.path)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests/s %.0f p50_us %d p99_us %d errors %d non2xx %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
