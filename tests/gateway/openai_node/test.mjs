// Calls llmq-gateway with the official `openai` npm package, through both its OpenAI and
// AzureOpenAI clients, and checks answers and error mapping.
//   GATEWAY_URL=http://127.0.0.1:PORT node test.mjs
import OpenAI, { AzureOpenAI } from 'openai';

const base = process.env.GATEWAY_URL;
if (!base) {
  console.error('GATEWAY_URL is not set');
  process.exit(2);
}
let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}
const messages = [{ role: 'user', content: 'Hello from the openai package' }];
const common = { apiKey: 'client-key-1', maxRetries: 0, timeout: 20000 };

const openai = new OpenAI({ ...common, baseURL: `${base}/v1`, defaultHeaders: { 'x-user-id': 'node-openai' } });
const azure = new AzureOpenAI({
  ...common,
  endpoint: base,
  apiVersion: '2024-10-21',
  deployment: 'gpt-4o-east',
  defaultHeaders: { 'x-user-id': 'node-azure' },
});

await check('OpenAI client: chat completion by model name', async () => {
  const r = await openai.chat.completions.create({ model: 'gpt-4o', messages, max_tokens: 20 });
  assert(r.object === 'chat.completion', `object is ${r.object}`);
  assert(r.choices.length === 1 && typeof r.choices[0].message.content === 'string', 'one choice with content');
  assert(r.usage && r.usage.total_tokens > 0, 'usage reported');
});

await check('OpenAI client: embeddings', async () => {
  const r = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'], encoding_format: 'float' });
  assert(r.data.length === 2, `got ${r.data.length} embeddings`);
  assert(r.data[0].embedding.length > 0, 'vector not empty');
});

await check('AzureOpenAI client: chat completion on a deployment', async () => {
  const r = await azure.chat.completions.create({ model: 'gpt-4o-east', messages, max_tokens: 20 });
  assert(r.choices[0].message.role === 'assistant', 'assistant reply');
});

await check('AzureOpenAI client: embeddings on a deployment', async () => {
  const emb = new AzureOpenAI({ ...common, endpoint: base, apiVersion: '2024-10-21', deployment: 'embed-1',
                                defaultHeaders: { 'x-user-id': 'node-azure' } });
  const r = await emb.embeddings.create({ model: 'embed-1', input: 'hello', encoding_format: 'float' });
  assert(r.data.length === 1, 'one embedding');
});

await check('missing user header maps to BadRequestError (400)', async () => {
  const anon = new OpenAI({ ...common, baseURL: `${base}/v1` });
  try {
    await anon.chat.completions.create({ model: 'gpt-4o', messages });
    throw new Error('expected an error');
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError, `got ${e && e.constructor && e.constructor.name}`);
    assert(e.status === 400, `status ${e.status}`);
  }
});

await check('wrong client key maps to AuthenticationError (401)', async () => {
  const bad = new OpenAI({ ...common, apiKey: 'nope', baseURL: `${base}/v1`, defaultHeaders: { 'x-user-id': 'x' } });
  try {
    await bad.chat.completions.create({ model: 'gpt-4o', messages });
    throw new Error('expected an error');
  } catch (e) {
    assert(e instanceof OpenAI.AuthenticationError, `got ${e && e.constructor && e.constructor.name}`);
  }
});

await check('unknown model maps to NotFoundError (404)', async () => {
  try {
    await openai.chat.completions.create({ model: 'no-such-model', messages });
    throw new Error('expected an error');
  } catch (e) {
    assert(e instanceof OpenAI.NotFoundError, `got ${e && e.constructor && e.constructor.name}`);
  }
});

await check('user over its limit maps to RateLimitError (429) with retry-after', async () => {
  const limited = new OpenAI({ ...common, baseURL: `${base}/v1`, defaultHeaders: { 'x-user-id': 'node-limited' } });
  let error;
  for (let i = 0; i < 50 && !error; i++) {
    try {
      await limited.chat.completions.create({ model: 'gpt-4o', messages, max_tokens: 5 });
    } catch (e) {
      error = e;
    }
  }
  assert(error instanceof OpenAI.RateLimitError, `got ${error && error.constructor && error.constructor.name}`);
  assert(Number(error.headers.get('retry-after')) > 0, 'retry-after header');
});

// ---- streaming --------------------------------------------------------------------------

const mockUrl = process.env.MOCK_URL;
async function gatewayMetric(name) {
  const r = await fetch(`${base}/metrics`, { headers: { 'api-key': 'client-key-1' } });
  const text = await r.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}
async function setFaults(deployment, faults) {
  const r = await fetch(`${mockUrl}/mock/deployments/${deployment}/faults`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(faults),
  });
  assert(r.status === 200, `PUT faults: ${r.status}`);
}
async function mockStats(deployment) {
  const r = await fetch(`${mockUrl}/mock/stats`);
  return (await r.json()).deployments[deployment];
}
/// Reads a stream; returns the text, the chunks, and when the first and last content came.
async function collect(stream) {
  let text = '';
  const chunks = [];
  let first;
  let last;
  for await (const chunk of stream) {
    chunks.push(chunk);
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      const now = performance.now();
      if (first === undefined) first = now;
      last = now;
      text += delta.content;
    }
  }
  return { text, chunks, first, last };
}
const words = 'one two three four five six seven eight nine ten eleven twelve';
const streamMessages = [{ role: 'user', content: words }];
const wholeText = (await openai.chat.completions.create({ model: 'gpt-4o', messages: streamMessages }))
  .choices[0].message.content;

await check('OpenAI client: a stream arrives whole, chunk by chunk, then ends', async () => {
  const started = performance.now();
  const stream = await openai.chat.completions.create({ model: 'gpt-4o-slow', messages: streamMessages, stream: true });
  const got = await collect(stream);
  assert(got.text === wholeText, `text "${got.text}" vs "${wholeText}"`);
  const finish = got.chunks.filter((c) => c.choices.length > 0 && c.choices[0].finish_reason);
  assert(finish.length === 1 && finish[0].choices[0].finish_reason === 'stop', 'one finish_reason stop');
  // 50 tokens/s upstream: the first content comes long before the last, not all at the end.
  assert(got.last - got.first > 150, `content spread over ${got.last - got.first} ms`);
  assert(got.first - started < (got.last - started) / 2, 'first content in the first half');
  assert(got.chunks.every((c) => !c.usage), 'no usage chunk when not asked');
  // Azure's content filter fields pass through.
  assert(got.chunks.some((c) => c.prompt_filter_results), 'prompt_filter_results passed through');
});

await check('OpenAI client: stream_options.include_usage gives the usage chunk', async () => {
  const stream = await openai.chat.completions.create({
    model: 'gpt-4o', messages: streamMessages, stream: true, stream_options: { include_usage: true },
  });
  const got = await collect(stream);
  const usage = got.chunks.filter((c) => c.usage);
  assert(usage.length === 1, `${usage.length} usage chunks`);
  assert(usage[0].usage.completion_tokens > 0 && usage[0].usage.prompt_tokens > 0, 'usage counts');
  assert(usage[0].choices.length === 0, 'the usage chunk has no choices');
});

await check('AzureOpenAI client: streams on a deployment', async () => {
  const stream = await azure.chat.completions.create({ model: 'gpt-4o-east', messages: streamMessages, stream: true });
  const got = await collect(stream);
  assert(got.text === wholeText, `text "${got.text}"`);
  assert(got.chunks.every((c) => !c.usage), 'no usage chunk when not asked');
});

await check('a throttled deployment before the first byte is retried elsewhere, unseen', async () => {
  const throttledBefore = (await mockStats('gpt-4o-east')).rate_limited;
  await setFaults('gpt-4o-east', { force_429: true, force_429_retry_after_ms: 60000 });
  try {
    for (let i = 0; i < 4; i++) {
      const stream = await openai.chat.completions.create({ model: 'gpt-4o', messages: streamMessages, stream: true });
      const got = await collect(stream);
      assert(got.text === wholeText, `text "${got.text}"`);
    }
    // Round robin sent at least one of them to the throttled deployment first.
    assert((await mockStats('gpt-4o-east')).rate_limited > throttledBefore, 'east answered 429');
  } finally {
    await setFaults('gpt-4o-east', {});
  }
});

/// Streams from gpt-4o-slow with `faults` set on it; returns the error the stream ended
/// with and the content pieces that came before it.
async function streamWithFaults(faults) {
  await setFaults('gpt-4o-slow', faults);
  try {
    const stream = await openai.chat.completions.create({ model: 'gpt-4o-slow', messages: streamMessages, stream: true });
    const texts = [];
    try {
      for await (const chunk of stream) if (chunk.choices[0]) texts.push(chunk.choices[0].delta.content);
    } catch (e) {
      return { error: e, texts };
    }
    return { error: undefined, texts };
  } finally {
    await setFaults('gpt-4o-slow', {});
  }
}

await check('a stream that breaks off mid-way ends with an error, not a silent truncation', async () => {
  const { error, texts } = await streamWithFaults({ stream_break_rate: 1, stream_fault_after: 3 });
  assert(error instanceof OpenAI.APIError, `got ${error && error.constructor && error.constructor.name}`);
  assert(texts.length > 0, 'chunks before the break reached the client');
});

await check('a malformed chunk mid-stream ends the stream with an error', async () => {
  const { error } = await streamWithFaults({ stream_malformed_rate: 1, stream_fault_after: 3 });
  assert(error instanceof OpenAI.APIError, `got ${error && error.constructor && error.constructor.name}`);
});

await check('aborting mid-stream cancels the upstream call', async () => {
  const disconnects = await gatewayMetric('llmq_gateway_client_disconnects_total');
  const controller = new AbortController();
  const stream = await openai.chat.completions.create(
    { model: 'gpt-4o-slow', messages: streamMessages, stream: true, mock_completion_tokens: 2000 },
    { signal: controller.signal },
  );
  let n = 0;
  try {
    for await (const chunk of stream) {
      void chunk;
      if (++n === 3) controller.abort();
    }
  } catch (e) {
    assert(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', `got ${e && e.constructor && e.constructor.name}`);
  }
  // The 40 s upstream stream ends at once: nothing in flight, no stream open.
  let inFlight;
  let open;
  for (let i = 0; i < 50; i++) {
    inFlight = await gatewayMetric('llmq_in_flight');
    open = await gatewayMetric('llmq_gateway_streams_open');
    if (inFlight === 0 && open === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert(inFlight === 0, `in flight ${inFlight}`);
  assert(open === 0, `streams open ${open}`);
  assert((await gatewayMetric('llmq_gateway_client_disconnects_total')) > disconnects, 'disconnect counted');
});

await check('many concurrent streams all arrive whole', async () => {
  const n = 64;
  const runs = [];
  for (let i = 0; i < n; i++) {
    runs.push((async () => {
      const stream = await openai.chat.completions.create(
        { model: 'gpt-4o-slow', messages: [{ role: 'user', content: `stream number ${i}` }], stream: true },
        { headers: { 'x-user-id': `node-stream-${i}` } },
      );
      const got = await collect(stream);
      assert(got.text.includes(`number ${i}`), `stream ${i}: "${got.text}"`);
    })());
  }
  await Promise.all(runs);
  const ttft = await gatewayMetric('llmq_time_to_first_token_seconds_count');
  assert(ttft > 0, `time to first token observed ${ttft} times`);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
