// The chat service (S4) for k6: the fixtures a run writes into (users, one application each, chats)
// and its three measured requests — the write (POST a message) and the two reads (GET a page of
// chats, GET a page of messages) — each tagged with its `op` and a fixed `name` (the URL template,
// so k6 keeps one time series per route instead of one per application token), each checked for
// its status and the shape of its body.

import http from 'k6/http';
import { check } from 'k6';

export const OPS = ['write', 'read_chats', 'read_messages'];

export const NAMES = {
  write: 'POST /api/v1/applications/{token}/chats/{number}/messages',
  read_chats: 'GET /api/v1/applications/{token}/chats',
  read_messages: 'GET /api/v1/applications/{token}/chats/{number}/messages',
};

function fail(message) {
  throw new Error(message);
}

function parse(res) {
  try {
    return res.json();
  } catch (_) {
    return undefined;
  }
}

// "POST /api/v1/users: expected 201, got 409 (conflict: …)" — the service's error envelope when
// there is one, the transport error otherwise.
function describe(res, what, expected) {
  const body = parse(res);
  const why = body && body.error ? `${body.error.code}: ${body.error.message}` : res.error || String(res.body).slice(0, 200);
  return `${what}: expected ${expected}, got ${res.status} (${why})`;
}

function json(token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

// GET /ready on the chat service; stops the run with the service's own reason when it is not ready.
export function requireReady(chatUrl) {
  const res = http.get(`${chatUrl}/ready`, { tags: { name: 'setup /ready' }, timeout: '5s' });
  if (res.status !== 200) {
    fail(`chat service not ready at ${chatUrl}/ready (status ${res.status}${res.error ? `, ${res.error}` : `, ${String(res.body).slice(0, 200)}`})`);
  }
}

// Runs `requests` (k6 http.batch form) and returns their parsed bodies, stopping the run at the
// first answer that is not `expected`.
function batch(requests, what, expected) {
  const bodies = [];
  for (let i = 0; i < requests.length; i += 50) {
    for (const res of http.batch(requests.slice(i, i + 50))) {
      if (res.status !== expected) fail(describe(res, what, expected));
      const body = parse(res);
      if (body === undefined) fail(`${what}: the ${expected} answer is not JSON: ${String(res.body).slice(0, 200)}`);
      bodies.push(body);
    }
  }
  return bodies;
}

// The fixtures of one run: `users` users (emails unique to `run`, so a second run on the same
// database does not meet 409), one application each, `chats` chats in each application.
// Returns [{ token, app, chats: [number, …] }, …] — `token` is the user's JWT, `app` the
// application's token.
export function createFixtures(chatUrl, run, users, chats) {
  const userBodies = batch(
    Array.from({ length: users }, (_, i) => ({
      method: 'POST',
      url: `${chatUrl}/api/v1/users`,
      body: JSON.stringify({ email: `chat-perf-${run}-${i}@example.com`, name: `chat perf ${run} ${i}` }),
      params: { headers: json(), tags: { name: 'setup POST /api/v1/users' } },
    })),
    'POST /api/v1/users',
    201,
  );
  userBodies.forEach((u, i) => {
    if (typeof u.token !== 'string' || !u.token) fail(`POST /api/v1/users: answer ${i} has no token: ${JSON.stringify(u)}`);
  });

  const appBodies = batch(
    userBodies.map((u, i) => ({
      method: 'POST',
      url: `${chatUrl}/api/v1/applications`,
      body: JSON.stringify({ name: `chat-perf-${run}-${i}` }),
      params: { headers: json(u.token), tags: { name: 'setup POST /api/v1/applications' } },
    })),
    'POST /api/v1/applications',
    201,
  );
  appBodies.forEach((a, i) => {
    if (typeof a.token !== 'string' || !a.token) fail(`POST /api/v1/applications: answer ${i} has no token: ${JSON.stringify(a)}`);
  });

  const chatRequests = [];
  appBodies.forEach((a, i) => {
    for (let c = 0; c < chats; c += 1) {
      chatRequests.push({
        method: 'POST',
        url: `${chatUrl}/api/v1/applications/${a.token}/chats`,
        body: null,
        params: { headers: { Authorization: `Bearer ${userBodies[i].token}` }, tags: { name: 'setup POST /api/v1/applications/{token}/chats' } },
      });
    }
  });
  const chatBodies = batch(chatRequests, 'POST /api/v1/applications/{token}/chats', 201);

  return appBodies.map((a, i) => {
    const numbers = chatBodies.slice(i * chats, (i + 1) * chats).map((c) => c.number);
    numbers.forEach((n) => {
      if (!Number.isInteger(n) || n < 1) fail(`POST /api/v1/applications/{token}/chats: bad chat number ${JSON.stringify(n)}`);
    });
    return { token: userBodies[i].token, app: a.token, chats: numbers };
  });
}

// The (application, chat) that iteration `n` of a scenario uses: every chat of every application in
// turn, applications fastest, so consecutive requests spread over users and applications.
export function target(fixtures, n) {
  const perApp = fixtures[0].chats.length;
  const pair = n % (fixtures.length * perApp);
  const f = fixtures[pair % fixtures.length];
  return { token: f.token, app: f.app, chat: f.chats[Math.floor(pair / fixtures.length)] };
}

// Per-token request params, built once per VU and token rather than once per request.
const paramsCache = {};

function params(token, op) {
  const key = `${op} ${token}`;
  if (!paramsCache[key]) {
    paramsCache[key] = {
      headers: op === 'write' ? json(token) : { Authorization: `Bearer ${token}` },
      tags: { op, name: NAMES[op] },
    };
  }
  return paramsCache[key];
}

function isPage(body, key, perPage) {
  return body !== undefined && Array.isArray(body[key]) && body.page === 1 && body.per_page === perPage && body[key].length <= perPage;
}

// Each returns whether the answer had the expected status (and, with `checkBody`, body shape).
// The check names carry the op, so the end-of-test check list reads per request kind.

export function writeMessage(chatUrl, t, body, checkBody) {
  const res = http.post(
    `${chatUrl}/api/v1/applications/${t.app}/chats/${t.chat}/messages`,
    JSON.stringify({ body }),
    params(t.token, 'write'),
  );
  const statusOk = res.status === 202;
  let shapeOk = true;
  if (checkBody) {
    const b = statusOk ? parse(res) : undefined;
    shapeOk = b !== undefined && Number.isInteger(b.number) && b.number >= 1 && b.chat_number === t.chat && b.body === body;
  }
  check(null, { 'write: 202': () => statusOk, ...(checkBody ? { 'write: body {number, chat_number, body}': () => shapeOk } : {}) }, { op: 'write' });
  return { res, ok: statusOk && shapeOk };
}

export function readChats(chatUrl, t, perPage, checkBody) {
  const res = http.get(`${chatUrl}/api/v1/applications/${t.app}/chats?page=1&per_page=${perPage}`, params(t.token, 'read_chats'));
  const statusOk = res.status === 200;
  const shapeOk = !checkBody || (statusOk && isPage(parse(res), 'chats', perPage));
  check(null, { 'read_chats: 200': () => statusOk, ...(checkBody ? { 'read_chats: body {chats[], page, per_page}': () => shapeOk } : {}) }, { op: 'read_chats' });
  return { res, ok: statusOk && shapeOk };
}

export function readMessages(chatUrl, t, perPage, checkBody) {
  const res = http.get(
    `${chatUrl}/api/v1/applications/${t.app}/chats/${t.chat}/messages?page=1&per_page=${perPage}`,
    params(t.token, 'read_messages'),
  );
  const statusOk = res.status === 200;
  const shapeOk = !checkBody || (statusOk && isPage(parse(res), 'messages', perPage));
  check(null, { 'read_messages: 200': () => statusOk, ...(checkBody ? { 'read_messages: body {messages[], page, per_page}': () => shapeOk } : {}) }, { op: 'read_messages' });
  return { res, ok: statusOk && shapeOk };
}
