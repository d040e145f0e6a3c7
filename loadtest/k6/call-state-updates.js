// call-state-updates.js — the S2 call-state scenario: full call lifecycles posted to the messages
// service's state machine at a constant arrival rate of RATE updates per second.
//
//   TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant 00000000-0000-0000-0000-000000000000) \
//     k6 run loadtest/k6/call-state-updates.js
//   (or: bash scripts/k6-run.sh loadtest/k6/call-state-updates.js, which mints TOKEN)
//
// Each iteration is one call with an id of its own (cs-<run>-<iteration>): INITIATED → RINGING →
// ANSWERED → COMPLETED, or — for FAIL_PERCENT of the calls — FAILED after INITIATED, RINGING or
// ANSWERED (see lib/calls.js). The iteration rate is RATE / (mean updates per call), so the
// updates arrive at RATE per second (the source ramped 500 VUs instead; an open model keeps the
// offered rate independent of the service's latency). The requests of one call are sequential.
//
// Env: API_URL (http://localhost:8081 — the messages service itself; the gateway does not proxy
// this route), TOKEN (required: a JWT with a `tenant` claim), RATE (updates/s, 500), DURATION
// (60s; the source: 3 min at peak), FAIL_PERCENT (10), PRE_VUS (50) / MAX_VUS (500),
// THRESH_P95 (300 ms) / THRESH_P99 (500 ms) / THRESH_ERRORS (0.01), RESULTS_DIR / SUMMARY_JSON.
//
// Thresholds (the source's, S2): update p95 < 300 ms, p99 < 500 ms, errors < 1 % (any answer that
// is not 200 is an error; 409s and 5xx are also counted apart).

import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  baseUrl,
  durationMs,
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
  tokenClaims,
} from './lib/common.js';
import { lifecycle, lifecycleArrival, meanUpdates, runId, runLifecycle } from './lib/calls.js';

const API_URL = baseUrl('API_URL', 'http://localhost:8081');
const TOKEN = requireToken('TOKEN', TENANT_TOKEN_HOW);
const RATE = envInt('RATE', 500, { min: 1 });
const DURATION = envDuration('DURATION', '60s');
const FAIL_PERCENT = envInt('FAIL_PERCENT', 10);
const PRE_VUS = envInt('PRE_VUS', 50, { min: 1 });
const MAX_VUS = envInt('MAX_VUS', 500, { min: 1 });
const THRESH_P95 = envNumber('THRESH_P95', 300, { min: 0, exclusiveMin: true });
const THRESH_P99 = envNumber('THRESH_P99', 500, { min: 0, exclusiveMin: true });
const THRESH_ERRORS = envNumber('THRESH_ERRORS', 0.01);

if (FAIL_PERCENT > 100) throw new Error(`FAIL_PERCENT must be 0..100, got '${FAIL_PERCENT}'`);
if (!tokenClaims(TOKEN, 'TOKEN').tenant) {
  throw new Error(`TOKEN has no tenant claim (calls are tenant-scoped): TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant UUID)`);
}

const EVENT_URL = `${API_URL}/api/v1/demo/events/call`;

const updates = new Counter('call_updates');
const updateDuration = new Trend('call_update_duration', true);
const updateErrors = new Rate('call_update_errors');
const conflicts = new Counter('call_update_conflicts');
const serverErrors = new Counter('call_update_server_errors');
const callsCompleted = new Counter('calls_completed');
const callsFailed = new Counter('calls_failed');
const callsAborted = new Counter('calls_aborted');

export const options = {
  scenarios: {
    call_state_updates: {
      executor: 'constant-arrival-rate',
      ...lifecycleArrival(RATE, FAIL_PERCENT),
      duration: DURATION,
      preAllocatedVUs: Math.min(PRE_VUS, MAX_VUS),
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    call_update_duration: [`p(95)<${THRESH_P95}`, `p(99)<${THRESH_P99}`],
    call_update_errors: [`rate<${THRESH_ERRORS}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const CONFIG = {
  API_URL, RATE, DURATION, FAIL_PERCENT, PRE_VUS, MAX_VUS, THRESH_P95, THRESH_P99, THRESH_ERRORS,
  lifecycles_per_s: RATE / meanUpdates(FAIL_PERCENT),
};

export function setup() {
  const res = http.get(`${API_URL}/health`, { tags: { name: 'setup /health' }, timeout: '5s' });
  if (res.status !== 200) {
    throw new Error(`messages service not reachable at ${API_URL}/health (status ${res.status}${res.error ? `, ${res.error}` : ''})`);
  }
  const run = runId();
  console.log(
    `call-state-updates: ${RATE} updates/s (${CONFIG.lifecycles_per_s.toFixed(1)} calls/s, ${FAIL_PERCENT} % failing) → ${EVENT_URL}; ${DURATION}; run ${run}`,
  );
  return { run };
}

const PARAMS = {
  headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}` },
  tags: { name: 'POST /api/v1/demo/events/call' },
};

function onUpdate(res) {
  updates.add(1);
  updateDuration.add(res.timings.duration);
  updateErrors.add(res.status !== 200);
  if (res.status === 409) conflicts.add(1);
  if (res.status >= 500 || res.status === 0) serverErrors.add(1);
}

export default function (data) {
  const n = exec.scenario.iterationInTest;
  const states = lifecycle(n, FAIL_PERCENT);
  const result = runLifecycle(EVENT_URL, PARAMS, `cs-${data.run}-${n}`, states, n, onUpdate);
  check(result, { 'every update of the call answered 200': (r) => r.ok });
  if (!result.ok) {
    callsAborted.add(1);
  } else if (states[states.length - 1] === 'FAILED') {
    callsFailed.add(1);
  } else {
    callsCompleted.add(1);
  }
}

// Zero-valued counters are missing from k6's summary; these figures are always there, and the
// rate is over DURATION (the arrival window), not over the whole run with its start and stop.
function figures(data) {
  const updatesSent = metricValue(data, 'call_updates', 'count', 0);
  return {
    calls: {
      updates: updatesSent,
      updates_per_s: updatesSent / (durationMs(DURATION) / 1000),
      errors: metricValue(data, 'call_update_errors', 'passes', 0),
      conflicts_409: metricValue(data, 'call_update_conflicts', 'count', 0),
      server_errors_5xx: metricValue(data, 'call_update_server_errors', 'count', 0),
      completed: metricValue(data, 'calls_completed', 'count', 0),
      failed: metricValue(data, 'calls_failed', 'count', 0),
      aborted: metricValue(data, 'calls_aborted', 'count', 0),
      dropped_iterations: metricValue(data, 'dropped_iterations', 'count', 0),
    },
  };
}

export const handleSummary = makeHandleSummary(
  'call-state-updates',
  (data) => [
    `target: ${API_URL}  offered: ${RATE} updates/s (${CONFIG.lifecycles_per_s.toFixed(1)} calls/s)  duration: ${DURATION}`,
    `updates/s:          ${figures(data).calls.updates_per_s.toFixed(1)}/s over ${DURATION}  (${fmtCount(data, 'call_updates')} updates)`,
    `update p50/p95/p99: ${fmtMs(data, 'call_update_duration', 'med')} / ${fmtMs(data, 'call_update_duration', 'p(95)')} / ${fmtMs(data, 'call_update_duration', 'p(99)')}  (max ${fmtMs(data, 'call_update_duration', 'max')})`,
    `error rate:         ${fmtPercent(data, 'call_update_errors')}  (409: ${fmtCount(data, 'call_update_conflicts')}, 5xx/transport: ${fmtCount(data, 'call_update_server_errors')})`,
    `calls:              ${fmtCount(data, 'calls_completed')} completed, ${fmtCount(data, 'calls_failed')} failed (as planned), ${fmtCount(data, 'calls_aborted')} cut short by an error`,
    `iterations dropped: ${metricValue(data, 'dropped_iterations', 'count', 0)} (not started: no free VU; raise MAX_VUS)`,
  ],
  CONFIG,
  figures,
);
