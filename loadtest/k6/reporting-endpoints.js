// reporting-endpoints.js — the S2 reporting scenario: the messages service's reporting endpoints at
// a constant RATE of requests per second, one endpoint per request, in turn:
//   1. GET /api/v1/reporting/metrics?granularity=hourly  over the last 24 hours
//   2. GET /api/v1/reporting/calls — in turn: the first page; the first page of one state
//      (COMPLETED, FAILED, ANSWERED, RINGING, INITIATED in turn); the next page of this VU's
//      previous list (its next_cursor, with the same filter; the first page when there is none)
//   3. GET /api/v1/reporting/metrics?granularity=daily   over the last 30 days
//
//   TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant 00000000-0000-0000-0000-000000000000) \
//     k6 run loadtest/k6/reporting-endpoints.js
//   (or: bash scripts/k6-run.sh loadtest/k6/reporting-endpoints.js, which mints TOKEN)
//
// The figures mean something on a loaded database: `scripts/seed-calls.sh 1000000` first (tenant
// 00000000-0000-0000-0000-000000000000 is one of the seeded tenants). On an empty one every
// answer is small and the cursor pages never happen (reporting_cursor_pages says how many did).
//
// Env: API_URL (http://localhost:8081 — the messages service; the gateway does not proxy these
// routes), TOKEN (required: a JWT with a `tenant` claim), RATE (requests/s, 100), DURATION (60s;
// the source: 5 min at peak), LIMIT (page size of the calls list, 50), PRE_VUS (20) / MAX_VUS
// (200), THRESH_P50 (150 ms) / THRESH_P95 (300 ms) / THRESH_P99 (500 ms) / THRESH_SUCCESS (0.98),
// RESULTS_DIR / SUMMARY_JSON.
//
// Thresholds (the source's, S2): p50 < 150 ms, p95 < 300 ms, p99 < 500 ms, success > 98 % (a 200
// whose body has the expected shape).

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

const API_URL = baseUrl('API_URL', 'http://localhost:8081');
const TOKEN = requireToken('TOKEN', TENANT_TOKEN_HOW);
const RATE = envInt('RATE', 100, { min: 1 });
const DURATION = envDuration('DURATION', '60s');
const LIMIT = envInt('LIMIT', 50, { min: 1 });
const PRE_VUS = envInt('PRE_VUS', 20, { min: 1 });
const MAX_VUS = envInt('MAX_VUS', 200, { min: 1 });
const THRESH_P50 = envNumber('THRESH_P50', 150, { min: 0, exclusiveMin: true });
const THRESH_P95 = envNumber('THRESH_P95', 300, { min: 0, exclusiveMin: true });
const THRESH_P99 = envNumber('THRESH_P99', 500, { min: 0, exclusiveMin: true });
const THRESH_SUCCESS = envNumber('THRESH_SUCCESS', 0.98);

if (LIMIT > 200) throw new Error(`LIMIT must be 1..200 (the API's bound), got '${LIMIT}'`);
if (!tokenClaims(TOKEN, 'TOKEN').tenant) {
  throw new Error(`TOKEN has no tenant claim (reporting is tenant-scoped): TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant UUID)`);
}

const STATES = ['COMPLETED', 'FAILED', 'ANSWERED', 'RINGING', 'INITIATED'];
const HOUR_MS = 3600 * 1000;

const duration = new Trend('reporting_duration', true);
const hourlyDuration = new Trend('reporting_metrics_hourly_duration', true);
const dailyDuration = new Trend('reporting_metrics_daily_duration', true);
const callsDuration = new Trend('reporting_calls_duration', true);
const success = new Rate('reporting_success');
const requests = new Counter('reporting_requests');
const cursorPages = new Counter('reporting_cursor_pages');

export const options = {
  scenarios: {
    reporting: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.min(PRE_VUS, MAX_VUS),
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    reporting_duration: [`med<${THRESH_P50}`, `p(95)<${THRESH_P95}`, `p(99)<${THRESH_P99}`],
    reporting_success: [`rate>${THRESH_SUCCESS}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const CONFIG = { API_URL, RATE, DURATION, LIMIT, PRE_VUS, MAX_VUS, THRESH_P50, THRESH_P95, THRESH_P99, THRESH_SUCCESS };

export function setup() {
  const res = http.get(`${API_URL}/health`, { tags: { name: 'setup /health' }, timeout: '5s' });
  if (res.status !== 200) {
    throw new Error(`messages service not reachable at ${API_URL}/health (status ${res.status}${res.error ? `, ${res.error}` : ''})`);
  }
  console.log(`reporting-endpoints: ${RATE} req/s (hourly metrics, calls list, daily metrics in turn) → ${API_URL}; ${DURATION}`);
}

const HEADERS = { Authorization: `Bearer ${TOKEN}` };

function get(path, name, trend, shapeOk) {
  const res = http.get(`${API_URL}${path}`, { headers: HEADERS, tags: { name } });
  let body;
  try {
    body = res.status === 200 ? res.json() : undefined;
  } catch (_) {
    body = undefined;
  }
  const ok = res.status === 200 && body !== undefined && shapeOk(body);
  check(res, { [`${name}: 200 with the expected body`]: () => ok });
  requests.add(1);
  duration.add(res.timings.duration);
  trend.add(res.timings.duration);
  success.add(ok);
  return ok ? body : undefined;
}

function metricsRange(granularity, spanMs) {
  const to = new Date();
  const from = new Date(to.getTime() - spanMs);
  const query = `granularity=${granularity}&from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
  const trend = granularity === 'hourly' ? hourlyDuration : dailyDuration;
  get(`/api/v1/reporting/metrics?${query}`, `GET /api/v1/reporting/metrics ${granularity}`, trend,
    (b) => b.granularity === granularity && Array.isArray(b.buckets));
}

// This VU's last calls page that had a next page: {state, cursor}.
let next = null;

function callsPage(variant, n) {
  let state = '';
  let cursor = '';
  let name = 'GET /api/v1/reporting/calls';
  if (variant === 1) {
    state = STATES[Math.floor(n / 9) % STATES.length];
    name += ' ?state';
  } else if (variant === 2 && next) {
    ({ state, cursor } = next);
    name += ' ?cursor';
    cursorPages.add(1);
  }
  let query = `limit=${LIMIT}`;
  if (state) query += `&state=${state}`;
  if (cursor) query += `&cursor=${encodeURIComponent(cursor)}`;
  const body = get(`/api/v1/reporting/calls?${query}`, name, callsDuration, (b) => Array.isArray(b.calls));
  if (body) next = body.next_cursor ? { state, cursor: body.next_cursor } : null;
}

export default function () {
  const n = exec.scenario.iterationInTest;
  switch (n % 3) {
    case 0:
      metricsRange('hourly', 24 * HOUR_MS);
      break;
    case 1:
      callsPage(Math.floor(n / 3) % 3, n);
      break;
    default:
      metricsRange('daily', 30 * 24 * HOUR_MS);
  }
}

// Zero-valued counters are missing from k6's summary; these figures are always there, and the
// rate is over DURATION (the arrival window), not over the whole run with its start and stop.
function figures(data) {
  const sent = metricValue(data, 'reporting_requests', 'count', 0);
  return {
    reporting: {
      requests: sent,
      requests_per_s: sent / (durationMs(DURATION) / 1000),
      failures: metricValue(data, 'reporting_success', 'fails', 0),
      cursor_pages: metricValue(data, 'reporting_cursor_pages', 'count', 0),
      dropped_iterations: metricValue(data, 'dropped_iterations', 'count', 0),
    },
  };
}

export const handleSummary = makeHandleSummary(
  'reporting-endpoints',
  (data) => [
    `target: ${API_URL}  offered: ${RATE} req/s  duration: ${DURATION}`,
    `req/s:              ${figures(data).reporting.requests_per_s.toFixed(1)}/s over ${DURATION}  (${fmtCount(data, 'reporting_requests')} requests)`,
    `p50/p95/p99:        ${fmtMs(data, 'reporting_duration', 'med')} / ${fmtMs(data, 'reporting_duration', 'p(95)')} / ${fmtMs(data, 'reporting_duration', 'p(99)')}  (max ${fmtMs(data, 'reporting_duration', 'max')})`,
    `  hourly metrics:   p95 ${fmtMs(data, 'reporting_metrics_hourly_duration', 'p(95)')}`,
    `  daily metrics:    p95 ${fmtMs(data, 'reporting_metrics_daily_duration', 'p(95)')}`,
    `  calls list:       p95 ${fmtMs(data, 'reporting_calls_duration', 'p(95)')}  (${fmtCount(data, 'reporting_cursor_pages')} pages by next_cursor)`,
    `success rate:       ${fmtPercent(data, 'reporting_success')}`,
    `iterations dropped: ${metricValue(data, 'dropped_iterations', 'count', 0)} (not started: no free VU; raise MAX_VUS)`,
  ],
  CONFIG,
  figures,
);
