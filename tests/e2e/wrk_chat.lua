-- wrk -s wrk_chat.lua: non-streaming OpenAI chat completions against fake_upstream.py
-- WRK_PATH=/v1/messages switches to the Anthropic endpoint.
local path = os.getenv("WRK_PATH") or "/v1/chat/completions"
wrk.method = "POST"
wrk.path = path
wrk.headers["Content-Type"] = "application/json"
if path == "/v1/messages" then
  wrk.headers["x-api-key"] = "bench"
  wrk.headers["anthropic-version"] = "2023-06-01"
  wrk.body = '{"model":"claude-bench","max_tokens":256,"messages":[{"role":"user","content":"Say hello to the benchmark, please."}]}'
else
  wrk.headers["Authorization"] = "Bearer bench"
  local stream = os.getenv("WRK_STREAM") == "1"
  wrk.body = '{"model":"gpt-bench","stream":' .. (stream and "true" or "false") ..
    ',"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark, please."}]}'
end

-- non-200 answers show up in wrk's "Non-2xx or 3xx responses" line
