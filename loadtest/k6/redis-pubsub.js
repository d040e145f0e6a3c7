// redis-pubsub.js — the S2 pub/sub scenario: SUBSCRIBERS WebSockets on the gateway subscribed to
// the pattern `call.*`, while publishers post call events to the messages service at
// MESSAGES_PER_SECOND; every state change is published on Redis subject call.{state} and fanned
// out by the gateway to every socket.
//
//   TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant 00000000-0000-0000-0000-000000000000) \
//     k6 run loadtest/k6/redis-pubsub.js
//   (or: bash scripts/k6-run.sh loadtest/k6/redis-pubsub.js, which mints TOKEN)
//
// Timeline: the subscribers connect at once and hold their socket for SETTLE + DURATION + DRAIN;
// the publishers start SETTLE after them and publish for DURATION (constant arrival rate; each
// iteration is one call lifecycle with an id of its own, see lib/calls.js); DRAIN lets the last
// frames arrive. A subscriber that opens after the publishing began is counted as late, one whose
// socket closes before its time as dropped; both lose frames and it shows in the delivery rate.
//
// Measured per received frame of this run (its call ids carry the run's id; frames of anyone
// else on call.* are ignored): delivery latency = receive time − the envelope's `ts` (the unix ms
// at which the messages service published it; same machine clock), Trend pubsub_delivery_latency.
// Delivery rate = frames received / (events published × SUBSCRIBERS), from this run's own
// counters. A k6 threshold cannot be a ratio of two counters, so that one is computed after the
// run: it is printed as PASS/FAIL with the thresholds and written to the summary JSON under
// `pubsub` (pubsub.delivery_rate), but it does not change k6's exit code. Frames are matched
// with indexOf, not JSON.parse: at 200 × 500 frames/s the parsing would otherwise make k6 the
// bottleneck.
//
// Env: GATEWAY_URL (http://localhost:8080), API_URL (http://localhost:8081, the messages
// service), TOKEN (required: a JWT with a `tenant` claim), SUBSCRIBERS (200), MESSAGES_PER_SECOND
// (500), DURATION (60s; the source: 3 min at peak), SUBSCRIBE (the pattern, call.*), PUBLISHER_VUS
// (10, as the source) / PUB_MAX_VUS (100), FAIL_PERCENT (10), SETTLE (3s), DRAIN (3s),
// THRESH_P50 (50 ms) / THRESH_P95 (100 ms) / THRESH_P99 (200 ms) / THRESH_DELIVERY (0.95),
// RESULTS_DIR / SUMMARY_JSON.

import http from 'k6/http';
import ws from 'k6/ws';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  baseUrl,
  durationMs,
  env,
  envDuration,
  envInt,
  envNumber,
  fmtCount,
  fmtMs,
  fmtPercent,
  makeHandleSummary,
  metricValue,
  requireToken,
  TENANT_TOKEN_HOW,
  toWsUrl,
  tokenClaims,
} from './lib/common.js';
import { lifecycle, lifecycleArrival, meanUpdates, runId, runLifecycle } from './lib/calls.js';

const GATEWAY_URL = baseUrl('GATEWAY_URL', 'http://localhost:8080');
const API_URL = baseUrl('API_URL', 'http://localhost:8081');
const TOKEN = requireToken('TOKEN', TENANT_TOKEN_HOW);
const SUBSCRIBERS = envInt('SUBSCRIBERS', 200, { min: 1 });
const MESSAGES_PER_SECOND = envInt('MESSAGES_PER_SECOND', 500, { min: 1 });
const DURATION = envDuration('DURATION', '60s');
const SUBSCRIBE = env('SUBSCRIBE', 'call.*');
const PUBLISHER_VUS = envInt('PUBLISHER_VUS', 10, { min: 1 });
const PUB_MAX_VUS = envInt('PUB_MAX_VUS', 100, { min: 1 });
const FAIL_PERCENT = envInt('FAIL_PERCENT', 10);
const SETTLE = envDuration('SETTLE', '3s');
const DRAIN = envDuration('DRAIN', '3s');
const THRESH_P50 = envNumber('THRESH_P50', 50, { min: 0, exclusiveMin: true });
const THRESH_P95 = envNumber('THRESH_P95', 100, { min: 0, exclusiveMin: true });
const THRESH_P99 = envNumber('THRESH_P99', 200, { min: 0, exclusiveMin: true });
const THRESH_DELIVERY = envNumber('THRESH_DELIVERY', 0.95);

if (FAIL_PERCENT > 100) throw new Error(`FAIL_PERCENT must be 0..100, got '${FAIL_PERCENT}'`);
if (!tokenClaims(TOKEN, 'TOKEN').tenant) {
  throw new Error(`TOKEN has no tenant claim (calls are tenant-scoped): TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant UUID)`);
}

const SETTLE_MS = durationMs(SETTLE);
const DURATION_MS = durationMs(DURATION);
const DRAIN_MS = durationMs(DRAIN);
const EVENT_URL = `${API_URL}/api/v1/demo/events/call`;
const WS_URL = `${toWsUrl(GATEWAY_URL)}/api/v1/ws?subscribe=${encodeURIComponent(SUBSCRIBE)}`;

const deliveryLatency = new Trend('pubsub_delivery_latency', true);
const framesReceived = new Counter('pubsub_frames_received');
const published = new Counter('pubsub_events_published');
const publishDuration = new Trend('pubsub_publish_duration', true);
const publishErrors = new Rate('pubsub_publish_errors');
const subscribersConnected = new Counter('pubsub_subscribers_connected');
const subscribersLate = new Counter('pubsub_subscribers_late');
const subscribersDropped = new Counter('pubsub_subscribers_dropped');

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: `${SETTLE_MS + DURATION_MS + DRAIN_MS + 30000}ms`,
      exec: 'subscribe',
    },
    publishers: {
      executor: 'constant-arrival-rate',
      ...lifecycleArrival(MESSAGES_PER_SECOND, FAIL_PERCENT),
      startTime: SETTLE,
      duration: DURATION,
      preAllocatedVUs: Math.min(PUBLISHER_VUS, PUB_MAX_VUS),
      maxVUs: PUB_MAX_VUS,
      exec: 'publish',
    },
  },
  thresholds: {
    pubsub_delivery_latency: [`med<${THRESH_P50}`, `p(95)<${THRESH_P95}`, `p(99)<${THRESH_P99}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const CONFIG = {
  GATEWAY_URL, API_URL, SUBSCRIBERS, MESSAGES_PER_SECOND, DURATION, SUBSCRIBE, PUBLISHER_VUS, PUB_MAX_VUS,
  FAIL_PERCENT, SETTLE, DRAIN, THRESH_P50, THRESH_P95, THRESH_P99, THRESH_DELIVERY,
  lifecycles_per_s: MESSAGES_PER_SECOND / meanUpdates(FAIL_PERCENT),
};

export function setup() {
  for (const [what, url] of [['gateway', `${GATEWAY_URL}/health`], ['messages service', `${API_URL}/health`]]) {
    const res = http.get(url, { tags: { name: 'setup /health' }, timeout: '5s' });
    if (res.status !== 200) {
      throw new Error(`${what} not reachable at ${url} (status ${res.status}${res.error ? `, ${res.error}` : ''})`);
    }
  }
  const run = runId();
  console.log(
    `redis-pubsub: ${SUBSCRIBERS} subscribers on ${WS_URL}; ${MESSAGES_PER_SECOND} events/s → ${EVENT_URL} for ${DURATION} after ${SETTLE}; run ${run}`,
  );
  // The scenarios start right after setup returns: the clock the subscribers' timeline hangs on.
  return { run, t0: Date.now() };
}

// --- subscribers --------------------------------------------------------------------------------

export function subscribe(data) {
  const mark = `"call_id":"ps-${data.run}-`;
  const publishFrom = data.t0 + SETTLE_MS;
  const endAt = publishFrom + DURATION_MS + DRAIN_MS;
  const params = { headers: { Authorization: `Bearer ${TOKEN}` }, tags: { name: 'GET /api/v1/ws?subscribe' } };
  const res = ws.connect(WS_URL, params, (socket) => {
    socket.on('open', () => {
      subscribersConnected.add(1);
      if (Date.now() > publishFrom) subscribersLate.add(1);
      socket.setTimeout(() => socket.close(), Math.max(0, endAt - Date.now()));
    });
    socket.on('message', (frame) => {
      if (frame.indexOf(mark) < 0) return; // somebody else's call event
      const at = frame.indexOf('"ts":');
      if (at < 0) return;
      const ts = parseInt(frame.substring(at + 5, at + 25), 10);
      framesReceived.add(1);
      if (ts > 0) deliveryLatency.add(Date.now() - ts);
    });
    socket.on('close', () => {
      if (Date.now() < endAt - 50) subscribersDropped.add(1);
    });
    socket.on('error', (e) => {
      if (e.error() !== 'websocket: close sent') console.warn(`ws error (vu ${__VU}): ${e.error()}`);
    });
  });
  check(res, { 'ws upgraded (101)': (r) => r && r.status === 101 });
}

// --- publishers ---------------------------------------------------------------------------------

const PUBLISH_PARAMS = {
  headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}` },
  tags: { name: 'POST /api/v1/demo/events/call' },
};

function onPublish(res) {
  publishDuration.add(res.timings.duration);
  publishErrors.add(res.status !== 200);
  if (res.status !== 200) return;
  try {
    const answer = res.json();
    if (answer.state !== answer.previous_state) published.add(1); // a repeat publishes nothing
  } catch (_) {
    // counted as published by nobody: a 200 without its JSON body is the server's bug
  }
}

export function publish(data) {
  const n = exec.scenario.iterationInTest;
  const result = runLifecycle(EVENT_URL, PUBLISH_PARAMS, `ps-${data.run}-${n}`, lifecycle(n, FAIL_PERCENT), n, onPublish);
  check(result, { 'every event of the call answered 200': (r) => r.ok });
}

// --- summary ------------------------------------------------------------------------------------

// Rates are over DURATION (the publishing window). Zero-valued counters are missing from k6's
// summary; these figures are always there.
function delivery(data) {
  const publishedCount = metricValue(data, 'pubsub_events_published', 'count', 0);
  const received = metricValue(data, 'pubsub_frames_received', 'count', 0);
  const expected = publishedCount * SUBSCRIBERS;
  const rate = expected > 0 ? received / expected : null;
  return {
    pubsub: {
      subscribers: SUBSCRIBERS,
      subscribers_connected: metricValue(data, 'pubsub_subscribers_connected', 'count', 0),
      subscribers_late: metricValue(data, 'pubsub_subscribers_late', 'count', 0),
      subscribers_dropped: metricValue(data, 'pubsub_subscribers_dropped', 'count', 0),
      events_published: publishedCount,
      events_published_per_s: publishedCount / (DURATION_MS / 1000),
      publish_errors: metricValue(data, 'pubsub_publish_errors', 'passes', 0),
      publish_dropped_iterations: metricValue(data, 'dropped_iterations', 'count', 0),
      frames_expected: expected,
      frames_received: received,
      frames_received_per_s: received / (DURATION_MS / 1000),
      delivery_rate: rate,
      delivery_threshold: `rate>${THRESH_DELIVERY}`,
      delivery_ok: rate !== null && rate > THRESH_DELIVERY,
    },
  };
}

export const handleSummary = makeHandleSummary(
  'redis-pubsub',
  (data) => {
    const d = delivery(data).pubsub;
    const pct = d.delivery_rate === null ? 'n/a (nothing published)' : `${(d.delivery_rate * 100).toFixed(2)} %`;
    return [
      `gateway: ${WS_URL}  publishing to: ${EVENT_URL}  duration: ${DURATION} (+ ${SETTLE} settle, ${DRAIN} drain)`,
      `subscribers:        ${d.subscribers_connected} of ${SUBSCRIBERS} connected (${d.subscribers_late} late, ${d.subscribers_dropped} dropped early)`,
      `published:          ${d.events_published} events = ${d.events_published_per_s.toFixed(1)}/s (offered ${MESSAGES_PER_SECOND}/s); publish p95 ${fmtMs(data, 'pubsub_publish_duration', 'p(95)')}, errors ${fmtPercent(data, 'pubsub_publish_errors')}`,
      `frames received:    ${d.frames_received} of ${d.frames_expected} expected = ${d.frames_received_per_s.toFixed(1)}/s  (${fmtCount(data, 'ws_msgs_received')} frames in all on the sockets)`,
      `delivery rate:      ${pct}`,
      `delivery p50/p95/p99: ${fmtMs(data, 'pubsub_delivery_latency', 'med')} / ${fmtMs(data, 'pubsub_delivery_latency', 'p(95)')} / ${fmtMs(data, 'pubsub_delivery_latency', 'p(99)')}  (max ${fmtMs(data, 'pubsub_delivery_latency', 'max')}; ms resolution)`,
      `computed after the run (not a k6 threshold, k6's exit code ignores it):`,
      `  ${d.delivery_ok ? 'PASS' : 'FAIL'}  pubsub delivery_rate ${d.delivery_threshold}`,
    ];
  },
  CONFIG,
  delivery,
);
