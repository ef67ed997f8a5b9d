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

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
