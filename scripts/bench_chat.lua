-- wrk -s scripts/bench_chat.lua: one non-streaming OpenAI chat completion per request.
-- BENCH_MODEL picks the model ("gpt-bench" direct, "openai/gpt-bench" or "echo" through hearth);
-- BENCH_KEY is the bearer key.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench")
wrk.body = '{"model":"' .. (os.getenv("BENCH_MODEL") or "gpt-bench") ..
  '","messages":[{"role":"system","content":"You are terse."},' ..
  '{"role":"user","content":"Say hello to the benchmark, please."}]}'
