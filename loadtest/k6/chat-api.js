// chat-api.js — the S4 chat API performance test: message writes and chat/message reads against the
// chat service at once, each at a constant arrival rate (the source: 5,000 writes/s + 10,000
// reads/s for 30 s).
//
//   k6 run loadtest/k6/chat-api.js
//   WRITE_RATE=50 READ_RATE=100 DURATION=10s k6 run loadtest/k6/chat-api.js   (a quick check)
//
// k6 is NOT the tool for the full rate here: on a 2-core machine k6 itself runs out of CPU at a
// few thousand requests per second (see the k6 CPU shares in loadtest/BASELINES.md), long before
// 15,000 req/s; the run then shows dropped_iterations and latencies that measure k6, not the
// service. The full-rate S4 figures come from the native generator, `storm-loadgen chat`
// (scripts/run-performance-test.sh). This script is the k6 form of the same mix, for moderate
// rates and for checking the API's answers.
//
// Setup (not measured): USERS users (POST /api/v1/users, emails unique to this run), one
// application each, CHATS chats in each application. Then two scenarios at once, open model:
//   writes — WRITE_RATE/s  POST /api/v1/applications/{token}/chats/{number}/messages {"body"} → 202
//   reads  — READ_RATE/s, in turn (50/50):
//            GET /api/v1/applications/{token}/chats?page=1&per_page=PER_PAGE            → 200
//            GET /api/v1/applications/{token}/chats/{number}/messages?page=1&per_page=PER_PAGE → 200
// Every request carries its user's bearer token, the tag op (write | read_chats | read_messages)
// and a fixed name tag (the URL template). Consecutive iterations go to the next application, then
// the next chat, so the load spreads over every user, application and chat. There is no warm-up
// phase (the source had 5 s): the first requests of each VU open its connection.
//
// Env: CHAT_URL (http://127.0.0.1:8082), USERS (20), CHATS (5, per application), WRITE_RATE (5000
// writes/s; 0 = no writes), READ_RATE (10000 reads/s; 0 = no reads), DURATION (30s), PER_PAGE (50,
// 1–100), WRITE_PRE_VUS (50) / WRITE_MAX_VUS (500), READ_PRE_VUS (100) / READ_MAX_VUS (1000),
// CHECK_BODY (true: parse every answer and check its shape; false: status only, cheaper for k6),
// SETUP_TIMEOUT (60s), THRESH_WRITE_P95 (50 ms) / THRESH_WRITE_P99 (100 ms), THRESH_READ_P95
// (30 ms) / THRESH_READ_P99 (80 ms), THRESH_FAILED (0.05), RESULTS_DIR / SUMMARY_JSON.
//
// Thresholds (the source's, S4): writes p95 < 50 ms, p99 < 100 ms; reads p95 < 30 ms, p99 < 80 ms
// (both reads together, and each read on its own); success > 95 %, i.e. http_req_failed < 5 % for
// each op. The source's other criterion — throughput ≥ 50 % of the target — is printed after the
// run (writes/s, reads/s over DURATION) but is not a threshold: with k6 as the generator it
// measures k6.

import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import {
  baseUrl,
  durationMs,
  envBool,
  envDuration,
  envInt,
  envNumber,
  fmtCount,
  fmtMs,
  fmtPercent,
  makeHandleSummary,
  metricValue,
} from './lib/common.js';
import { runId } from './lib/calls.js';
import { createFixtures, readChats, readMessages, requireReady, target, writeMessage } from './lib/chat.js';

const CHAT_URL = baseUrl('CHAT_URL', 'http://127.0.0.1:8082');
const USERS = envInt('USERS', 20, { min: 1 });
const CHATS = envInt('CHATS', 5, { min: 1 });
const WRITE_RATE = envInt('WRITE_RATE', 5000);
const READ_RATE = envInt('READ_RATE', 10000);
const DURATION = envDuration('DURATION', '30s');
const PER_PAGE = envInt('PER_PAGE', 50, { min: 1 });
const WRITE_PRE_VUS = envInt('WRITE_PRE_VUS', 50, { min: 1 });
const WRITE_MAX_VUS = envInt('WRITE_MAX_VUS', 500, { min: 1 });
const READ_PRE_VUS = envInt('READ_PRE_VUS', 100, { min: 1 });
const READ_MAX_VUS = envInt('READ_MAX_VUS', 1000, { min: 1 });
const CHECK_BODY = envBool('CHECK_BODY', true);
const SETUP_TIMEOUT = envDuration('SETUP_TIMEOUT', '60s');
const THRESH_WRITE_P95 = envNumber('THRESH_WRITE_P95', 50, { min: 0, exclusiveMin: true });
const THRESH_WRITE_P99 = envNumber('THRESH_WRITE_P99', 100, { min: 0, exclusiveMin: true });
const THRESH_READ_P95 = envNumber('THRESH_READ_P95', 30, { min: 0, exclusiveMin: true });
const THRESH_READ_P99 = envNumber('THRESH_READ_P99', 80, { min: 0, exclusiveMin: true });
const THRESH_FAILED = envNumber('THRESH_FAILED', 0.05);

if (PER_PAGE > 100) throw new Error(`PER_PAGE must be 1..100 (the API's bound), got '${PER_PAGE}'`);
if (WRITE_RATE === 0 && READ_RATE === 0) throw new Error('WRITE_RATE and READ_RATE are both 0: nothing to run');

const writes = new Counter('chat_writes');
const writesFailed = new Counter('chat_writes_failed');
const reads = new Counter('chat_reads');
const readsFailed = new Counter('chat_reads_failed');

const scenarios = {};
const thresholds = {};
if (WRITE_RATE > 0) {
  scenarios.writes = {
    executor: 'constant-arrival-rate',
    rate: WRITE_RATE,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.min(WRITE_PRE_VUS, WRITE_MAX_VUS),
    maxVUs: WRITE_MAX_VUS,
    exec: 'write',
  };
  thresholds['http_req_duration{op:write}'] = [`p(95)<${THRESH_WRITE_P95}`, `p(99)<${THRESH_WRITE_P99}`];
  thresholds['http_req_failed{op:write}'] = [`rate<${THRESH_FAILED}`];
}
if (READ_RATE > 0) {
  scenarios.reads = {
    executor: 'constant-arrival-rate',
    rate: READ_RATE,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: Math.min(READ_PRE_VUS, READ_MAX_VUS),
    maxVUs: READ_MAX_VUS,
    exec: 'read',
  };
  // Both reads together (the source's figure), then each on its own.
  thresholds['http_req_duration{scenario:reads}'] = [`p(95)<${THRESH_READ_P95}`, `p(99)<${THRESH_READ_P99}`];
  for (const op of ['read_chats', 'read_messages']) {
    thresholds[`http_req_duration{op:${op}}`] = [`p(95)<${THRESH_READ_P95}`, `p(99)<${THRESH_READ_P99}`];
    thresholds[`http_req_failed{op:${op}}`] = [`rate<${THRESH_FAILED}`];
  }
}

export const options = {
  scenarios,
  thresholds,
  setupTimeout: SETUP_TIMEOUT,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const CONFIG = {
  CHAT_URL, USERS, CHATS, WRITE_RATE, READ_RATE, DURATION, PER_PAGE, WRITE_PRE_VUS, WRITE_MAX_VUS,
  READ_PRE_VUS, READ_MAX_VUS, CHECK_BODY, THRESH_WRITE_P95, THRESH_WRITE_P99, THRESH_READ_P95,
  THRESH_READ_P99, THRESH_FAILED,
};

export function setup() {
  requireReady(CHAT_URL);
  const run = runId();
  const started = Date.now();
  const fixtures = createFixtures(CHAT_URL, run, USERS, CHATS);
  console.log(
    `chat-api: ${USERS} users × 1 application × ${CHATS} chats created in ${Date.now() - started} ms (run ${run}); ` +
      `${WRITE_RATE} writes/s + ${READ_RATE} reads/s → ${CHAT_URL} for ${DURATION}`,
  );
  return { run, fixtures };
}

export function write(data) {
  const n = exec.scenario.iterationInTest;
  const { ok } = writeMessage(CHAT_URL, target(data.fixtures, n), `chat-api ${data.run} message ${n}`, CHECK_BODY);
  writes.add(1);
  if (!ok) writesFailed.add(1);
}

export function read(data) {
  const n = exec.scenario.iterationInTest;
  const t = target(data.fixtures, Math.floor(n / 2));
  const { ok } = n % 2 === 0 ? readChats(CHAT_URL, t, PER_PAGE, CHECK_BODY) : readMessages(CHAT_URL, t, PER_PAGE, CHECK_BODY);
  reads.add(1);
  if (!ok) readsFailed.add(1);
}

// Zero-valued counters are missing from k6's summary; these figures are always there, and the
// rates are over DURATION (the arrival window), not over the whole run with its setup and stop.
function figures(data) {
  const seconds = durationMs(DURATION) / 1000;
  const w = metricValue(data, 'chat_writes', 'count', 0);
  const r = metricValue(data, 'chat_reads', 'count', 0);
  const wFailed = metricValue(data, 'chat_writes_failed', 'count', 0);
  const rFailed = metricValue(data, 'chat_reads_failed', 'count', 0);
  return {
    chat: {
      writes: w,
      writes_per_s: w / seconds,
      writes_failed: wFailed,
      write_success_rate: w > 0 ? (w - wFailed) / w : null,
      reads: r,
      reads_per_s: r / seconds,
      reads_failed: rFailed,
      read_success_rate: r > 0 ? (r - rFailed) / r : null,
      dropped_iterations: metricValue(data, 'dropped_iterations', 'count', 0),
    },
  };
}

function latencyLine(data, label, metric) {
  return `${label}${fmtMs(data, metric, 'med')} / ${fmtMs(data, metric, 'p(95)')} / ${fmtMs(data, metric, 'p(99)')}  (max ${fmtMs(data, metric, 'max')})`;
}

function successText(rate) {
  return rate === null ? 'n/a' : `${(rate * 100).toFixed(2)} %`;
}

export const handleSummary = makeHandleSummary(
  'chat-api',
  (data) => {
    const f = figures(data).chat;
    return [
      `target: ${CHAT_URL}  offered: ${WRITE_RATE} writes/s + ${READ_RATE} reads/s  duration: ${DURATION}  fixtures: ${USERS} users × ${CHATS} chats`,
      `writes/s:           ${f.writes_per_s.toFixed(1)}/s over ${DURATION}  (${f.writes} writes, ${f.writes_failed} failed; success ${successText(f.write_success_rate)})`,
      `reads/s:            ${f.reads_per_s.toFixed(1)}/s over ${DURATION}  (${f.reads} reads, ${f.reads_failed} failed; success ${successText(f.read_success_rate)})`,
      latencyLine(data, 'write p50/p95/p99:  ', 'http_req_duration{op:write}'),
      latencyLine(data, 'reads p50/p95/p99:  ', 'http_req_duration{scenario:reads}'),
      latencyLine(data, '  chats list:       ', 'http_req_duration{op:read_chats}'),
      latencyLine(data, '  messages list:    ', 'http_req_duration{op:read_messages}'),
      `checks passed:      ${fmtPercent(data, 'checks')}${CHECK_BODY ? '' : '  (status only: CHECK_BODY=false)'}`,
      `iterations dropped: ${fmtCount(data, 'dropped_iterations')} (not started: no free VU; raise WRITE_MAX_VUS / READ_MAX_VUS — or k6 is out of CPU)`,
    ];
  },
  CONFIG,
  figures,
);
