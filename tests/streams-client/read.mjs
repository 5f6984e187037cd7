// Reads hearth run event streams with an independent Durable Streams client
// (@durable-streams/client, pinned in package.json), and checks what it delivered.
//
// Usage: node read.mjs BASE_URL API_KEY READ...
//   READ is MODE:RUN_ID or MODE:RUN_ID@OFFSET, where MODE is
//     whole      a catch-up read (live: false) until up to date
//     long-poll  a read that follows the run live by long-poll until the stream closes
//     sse        the same by SSE
//   and OFFSET (an offset hearth handed out, or -1) is where the read starts (default -1).
// The reads run concurrently. Prints one JSON array, a result per READ:
//   {read, mode, run, start, seqs, types, batches: [{offset, count, upToDate, streamClosed}],
//    closed, offset, requests, problems}
// and exits 1 when any read has problems: events out of order, a gap, a duplicate, a last
// event that is not terminal, a stream never reported closed (within READ_PATIENCE_MS,
// default 60 s), or an error. tests/e2e/test_streams_client.py drives it.

import { stream } from "@durable-streams/client";

const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled"]);
// How long one read may take before it counts as never closing (READ_PATIENCE_MS overrides).
const PATIENCE_MS = Number(process.env.READ_PATIENCE_MS) || 60_000;
const GRACE_MS = 1_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function usage(message) {
  process.stderr.write(`${message}\nusage: node read.mjs BASE_URL API_KEY MODE:RUN_ID[@OFFSET]...\n`);
  process.exit(2);
}

function parseRead(text) {
  const match = /^(whole|long-poll|sse):([^@]+)(?:@(.+))?$/.exec(text);
  if (!match) usage(`bad read \`${text}\``);
  const [, mode, run, start = "-1"] = match;
  return { text, mode, run, start };
}

// What is wrong with what a read delivered, if anything.
function problems(result) {
  const found = [];
  const { seqs, types } = result;
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] === seqs[i - 1]) found.push(`duplicate seq ${seqs[i]} at item ${i}`);
    else if (seqs[i] < seqs[i - 1]) found.push(`seq ${seqs[i]} after ${seqs[i - 1]} at item ${i}`);
    else if (seqs[i] !== seqs[i - 1] + 1) found.push(`gap: seq ${seqs[i - 1]} then ${seqs[i]}`);
  }
  if (seqs.length === 0) found.push("no events delivered");
  if (result.start === "-1" && seqs.length > 0 && seqs[0] !== 1) found.push(`read from -1 began at seq ${seqs[0]}`);
  const terminal = types.filter((t) => TERMINAL.has(t)).length;
  if (terminal !== 1 || !TERMINAL.has(types.at(-1))) found.push(`expected one terminal event, last: ${types}`);
  if (!result.closed) found.push("the stream was never reported closed");
  if (!result.batches.at(-1)?.streamClosed) found.push("the last batch does not say the stream is closed");
  return found;
}

async function readOne(base, key, read) {
  const requests = [];
  const recordingFetch = (input, init) => {
    requests.push(String(input instanceof Request ? input.url : input));
    return fetch(input, init);
  };
  const result = { read: read.text, mode: read.mode, run: read.run, start: read.start, seqs: [], types: [],
    batches: [], closed: false, offset: null, requests, problems: [] };
  try {
    const response = await stream({
      url: `${base}/v1/runs/${encodeURIComponent(read.run)}/events`,
      headers: { Authorization: `Bearer ${key}` },
      offset: read.start,
      live: read.mode === "whole" ? false : read.mode,
      json: true,
      fetch: recordingFetch,
      signal: AbortSignal.timeout(PATIENCE_MS),
    });
    // `closed` settles when the client's session ends, which can be before the subscriber has
    // seen the last batch: wait for a batch that says the stream closed, or else (a stream that
    // never closes) for the session's end and a grace for the subscriber to catch up.
    let sawClosing;
    const closing = new Promise((resolve) => { sawClosing = resolve; });
    response.subscribeJson((batch) => {
      for (const event of batch.items) {
        result.seqs.push(event.seq);
        result.types.push(event.type);
      }
      result.batches.push({ offset: batch.offset, count: batch.items.length, upToDate: batch.upToDate,
        streamClosed: batch.streamClosed });
      if (batch.streamClosed) sawClosing();
    });
    await Promise.race([closing, response.closed.then(() => sleep(GRACE_MS))]);
    await response.closed;
    result.closed = response.streamClosed;
    result.offset = response.offset;
  } catch (error) {
    result.problems.push(`error: ${error?.stack ?? error}`);
  }
  result.problems.push(...problems(result));
  return result;
}

const [base, key, ...reads] = process.argv.slice(2);
if (!base || !key || reads.length === 0) usage("missing arguments");
const results = await Promise.all(reads.map((r) => readOne(base.replace(/\/$/, ""), key, parseRead(r))));
process.stdout.write(`${JSON.stringify(results, null, 1)}\n`);
for (const r of results) {
  for (const p of r.problems) process.stderr.write(`${r.read}: ${p}\n`);
}
process.exit(results.some((r) => r.problems.length > 0) ? 1 : 0);
