// perf-load.js — the S0 load scenario, reproduced: HTTP publishers POST events to the gateway's
// drop-in /publish route while WebSocket subscribers on /ws receive the fan-out over Redis.
// With CHANNEL_ID set, the whole channel path instead: publishers POST messages to
// /api/v1/channels/{CHANNEL_ID}/messages on the gateway (proxied to the messages service, stored
// in Postgres, published on channel.{CHANNEL_ID}) and subscribers listen on /ws?channel_id=.
//
//   ACCESS_TOKEN=$(bash scripts/gen-jwt.sh user-1) k6 run loadtest/k6/perf-load.js
//   (or simply: bash scripts/perf-load.sh)
//
// Env: GATEWAY_URL (http://localhost:8080), SUBJECT (storm.events; with CHANNEL_ID it is always
// channel.<CHANNEL_ID>), CHANNEL_ID (publishers POST /api/v1/channels/ID/messages {"body"},
// subscribers use /ws?channel_id=ID; 1–64 of A-Z a-z 0-9 _ -), DURATION, PUB_VUS, WS_VUS,
// PUB_RATE (POSTs per second per publisher VU), MODE=baseline|chaos, THRESH_FAIL, THRESH_P95 (ms),
// WS_LATENCY (parse every frame to measure delivery latency; default on in baseline, off in
// chaos where parsing would make k6 itself the bottleneck), ACCESS_TOKEN (required),
// RESULTS_DIR / SUMMARY_JSON (where the JSON summary goes).
//
// Every delivered event is counted by k6's own `ws_msgs_received` counter (k6/ws counts each
// frame it receives), so this script does not add its own: a second counter of the same name
// would count every frame twice.

import http from 'k6/http';
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import {
  baseUrl,
  env,
  envBool,
  envChoice,
  envDuration,
  envInt,
  envNumber,
  fmtCount,
  fmtMs,
  fmtPercent,
  fmtRate,
  makeHandleSummary,
  requireToken,
  toWsUrl,
} from './lib/common.js';

const MODE = envChoice('MODE', 'baseline', ['baseline', 'chaos']);
const CHAOS = MODE === 'chaos';

const GATEWAY_URL = baseUrl('GATEWAY_URL', 'http://localhost:8080');
const CHANNEL_ID = env('CHANNEL_ID', '');
if (CHANNEL_ID && !/^[A-Za-z0-9_-]{1,64}$/.test(CHANNEL_ID)) {
  throw new Error(`CHANNEL_ID must be 1–64 of A-Z a-z 0-9 _ -, got '${CHANNEL_ID}'`);
}
// A channel's messages are published on channel.<id> whatever SUBJECT says.
const SUBJECT = CHANNEL_ID ? `channel.${CHANNEL_ID}` : env('SUBJECT', 'storm.events');
if (CHANNEL_ID && env('SUBJECT', SUBJECT) !== SUBJECT) {
  console.warn(`SUBJECT=${env('SUBJECT', '')} ignored: with CHANNEL_ID the subject is ${SUBJECT}`);
}
const DURATION = envDuration('DURATION', CHAOS ? '60s' : '30s');
const PUB_VUS = envInt('PUB_VUS', CHAOS ? 100 : 5);
const WS_VUS = envInt('WS_VUS', CHAOS ? 100 : 5);
const PUB_RATE = envNumber('PUB_RATE', CHAOS ? 50 : 10, { min: 0, exclusiveMin: true });
const THRESH_FAIL = envNumber('THRESH_FAIL', CHAOS ? 0.1 : 0.01);
const THRESH_P95 = envNumber('THRESH_P95', CHAOS ? 500 : 250, { min: 0, exclusiveMin: true });
const WS_LATENCY = envBool('WS_LATENCY', !CHAOS);
const ACCESS_TOKEN = requireToken('ACCESS_TOKEN');

if (PUB_VUS + WS_VUS === 0) throw new Error('PUB_VUS and WS_VUS are both 0: nothing to run');

const PUBLISH_URL = CHANNEL_ID
  ? `${GATEWAY_URL}/api/v1/channels/${CHANNEL_ID}/messages`
  : `${GATEWAY_URL}/publish?subject=${encodeURIComponent(SUBJECT)}`;
const WS_URL = CHANNEL_ID
  ? `${toWsUrl(GATEWAY_URL)}/ws?channel_id=${encodeURIComponent(CHANNEL_ID)}`
  : `${toWsUrl(GATEWAY_URL)}/ws?subject=${encodeURIComponent(SUBJECT)}`;

// Envelopes of the subscribed subject, and publish→receive latency for those that this run
// published (the payload carries the publisher's Date.now(); same machine clock).
const wsEventsReceived = new Counter('ws_events_received');
const wsDeliveryLatency = new Trend('ws_delivery_latency', true);

const scenarios = {};
if (PUB_VUS > 0) {
  scenarios.publishers = { executor: 'constant-vus', vus: PUB_VUS, duration: DURATION, exec: 'publish' };
}
if (WS_VUS > 0) {
  scenarios.subscribers = { executor: 'constant-vus', vus: WS_VUS, duration: DURATION, exec: 'subscribe' };
}

export const options = {
  scenarios,
  thresholds: {
    http_req_failed: [`rate<${THRESH_FAIL}`],
    http_req_duration: [`p(95)<${THRESH_P95}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const CONFIG = {
  MODE, GATEWAY_URL, SUBJECT, CHANNEL_ID, DURATION, PUB_VUS, WS_VUS, PUB_RATE, THRESH_FAIL, THRESH_P95, WS_LATENCY,
};

// Fail fast, with the URL in the message, when nothing answers: otherwise every VU would just
// pile up connection errors for the whole DURATION.
export function setup() {
  const res = http.get(`${GATEWAY_URL}/healthz`, { tags: { name: 'setup /healthz' }, timeout: '5s' });
  if (res.status !== 200) {
    throw new Error(`gateway not reachable at ${GATEWAY_URL}/healthz (status ${res.status}${res.error ? `, ${res.error}` : ''})`);
  }
  console.log(
    `perf-load ${MODE}: ${PUB_VUS} publishers × ${PUB_RATE}/s → ${PUBLISH_URL}; ${WS_VUS} subscribers on ${WS_URL}; ${DURATION}`,
  );
}

let seq = 0;
const AUTH_JSON = {
  headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ACCESS_TOKEN}` },
  tags: { name: CHANNEL_ID ? 'POST /api/v1/channels/{id}/messages' : 'POST /publish' },
};

// The event's text, {"seq","ts","vu"}: /publish carries it as `payload`, a channel message as its
// `body`; subscribers read the publish time back from it.
export function publish() {
  seq += 1;
  const text = JSON.stringify({ seq, ts: Date.now(), vu: __VU });
  const body = JSON.stringify(CHANNEL_ID ? { body: text } : { payload: text });
  const res = http.post(PUBLISH_URL, body, AUTH_JSON);
  if (CHANNEL_ID) {
    check(res, { 'message stored (201)': (r) => r.status === 201 });
  } else {
    check(res, { 'publish accepted (202/200)': (r) => r.status === 202 || r.status === 200 });
  }
  sleep(1 / PUB_RATE);
}

function recordEnvelope(frame) {
  let envelope;
  try {
    envelope = JSON.parse(frame);
  } catch (_) {
    return;
  }
  if (!envelope || envelope.subject !== SUBJECT) return;
  wsEventsReceived.add(1);
  const payload = envelope.data && (CHANNEL_ID ? envelope.data.body : envelope.data.payload);
  if (typeof payload !== 'string') return;
  try {
    const sent = JSON.parse(payload).ts;
    if (typeof sent === 'number') wsDeliveryLatency.add(Date.now() - sent);
  } catch (_) {
    // Somebody else's payload on the same subject: counted, not timed.
  }
}

export function subscribe() {
  const params = { headers: { Authorization: `Bearer ${ACCESS_TOKEN}` }, tags: { name: 'GET /ws' } };
  const res = ws.connect(WS_URL, params, (socket) => {
    socket.on('open', () => {
      socket.send(JSON.stringify({ user: `vu-${__VU}`, message: 'hello' }));
      socket.setTimeout(() => socket.close(), 1000);
    });
    if (WS_LATENCY) socket.on('message', recordEnvelope);
    socket.on('error', (e) => {
      if (e.error() !== 'websocket: close sent') console.warn(`ws error (vu ${__VU}): ${e.error()}`);
    });
  });
  check(res, { 'ws upgraded (101)': (r) => r && r.status === 101 });
  sleep(1);
}

export const handleSummary = makeHandleSummary(
  'perf-load',
  (data) => [
    `mode: ${MODE}  duration: ${DURATION}  VUs: ${PUB_VUS + WS_VUS} (${PUB_VUS} HTTP + ${WS_VUS} WS)  publish rate: ${PUB_RATE}/s per VU`,
    `gateway: ${GATEWAY_URL}  subject: ${SUBJECT}${CHANNEL_ID ? `  channel: ${CHANNEL_ID} (POST ${PUBLISH_URL})` : ''}`,
    `HTTP p95:          ${fmtMs(data, 'http_req_duration', 'p(95)')}  (p99 ${fmtMs(data, 'http_req_duration', 'p(99)')})`,
    `HTTP error rate:   ${fmtPercent(data, 'http_req_failed')}`,
    `HTTP req/s:        ${fmtRate(data, 'http_reqs')}  (${fmtCount(data, 'http_reqs')} requests)`,
    `WS connect p95:    ${fmtMs(data, 'ws_connecting', 'p(95)')}`,
    `WS msgs received:  ${fmtRate(data, 'ws_msgs_received')}  (${fmtCount(data, 'ws_msgs_received')} frames)`,
    WS_LATENCY
      ? `WS delivery p95:   ${fmtMs(data, 'ws_delivery_latency', 'p(95)')}  (${fmtCount(data, 'ws_events_received')} events of ${SUBJECT})`
      : 'WS delivery:       not measured (WS_LATENCY=false)',
  ],
  CONFIG,
);
