// stress-test.js — the S1 stress test: find where the interceptor-overhead server's full chain
// (storm-interceptors :8180) breaks, ramping from 100 to 2,000 VUs with almost no think time.
//
//   k6 run loadtest/k6/stress-test.js                          (8 min, up to 2,000 VUs)
//   STAGES=3s:20,3s:50,2s:0 k6 run loadtest/k6/stress-test.js    (a quick check)
//
// Shape (the source's): 1m → 100, 2m → 500, 2m → 1000, 2m → 2000, 1m → 0 VUs (the levels scale
// with VUS, the peak); each VU calls SayHello with the name StressTest-<vu>-<iteration>, checks the
// greeting and sleeps 10 ms.
//
// Thresholds — the source's: error rate < 5 %, success > 95 % (no latency bound: it looks for the
// breaking point); ours: error rate < 0.1 % (THRESH_FAILED). The result block has what the
// source's checklist asks — latency and throughput at each load level, one row per stage — from
// requests counted per stage (the source estimated "throughput" as 1000 / one request's duration,
// which is a latency, not a rate).
//
// Env: BASE_URL or BASE_HOST / PROTOCOL / FULLCHAIN_PORT (lib/connect.js), VUS (2000, the peak),
// DURATIONS (1m,2m,2m,2m,1m) or STAGES (duration:VUs,…), THINK_MS (10), THRESH_FAILED (0.001),
// VU_CAP (set by scripts/k6-run.sh from the open-files limit), RESULTS_DIR / SUMMARY_JSON.

import { sleep } from 'k6';
import {
  envInt,
  envNumber,
  forOptions,
  fmtCount,
  fmtMs,
  fmtPercent,
  fmtRate,
  makeHandleSummary,
  metricValue,
  progress,
} from './lib/common.js';
import { BASE_URL, TLS_OPTIONS, callOnce, requireServing } from './lib/connect.js';
import {
  capNote,
  describeStages,
  elapsedMs,
  stageAt,
  stageFigures,
  stageLines,
  stagePlan,
  trackStages,
} from './lib/stages.js';

const VUS = envInt('VUS', 2000, { min: 1 });
const level = (n) => Math.max(1, Math.round((n * VUS) / 2000));
const plan = stagePlan(['1m', '2m', '2m', '2m', '1m'], [level(100), level(500), level(1000), VUS, 0]);
const THINK_MS = envNumber('THINK_MS', 10);
const THRESH_FAILED = envNumber('THRESH_FAILED', 0.001);

const thresholds = forOptions(() => {
  const all = {
    http_req_failed: ['rate<0.05', `rate<${THRESH_FAILED}`], // the source's, then ours
    success_rate: ['rate>0.95'],
  };
  trackStages(all, plan, 'request_duration');
  return all;
}, {});

export const options = {
  stages: plan.stages,
  thresholds,
  ...TLS_OPTIONS,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
  tags: { test_type: 'stress' },
};

const CONFIG = { BASE_URL, VUS, STAGES: plan.stages, VU_CAP: plan.cap, THINK_MS, THRESH_FAILED };

export function setup() {
  requireServing({ fullchain: BASE_URL });
  console.log(`stress-test: ${describeStages(plan)} → ${BASE_URL}; think ${THINK_MS} ms`);
  if (plan.capped) console.warn(capNote(plan));
}

export default function () {
  const stage = String(stageAt(plan, elapsedMs()));
  callOnce(`StressTest-${__VU}-${__ITER}`, { stage });
  progress('stress-test');
  sleep(THINK_MS / 1000);
}

function figures(data) {
  const stages = stageFigures(data, plan, 'request_duration');
  const rated = stages.filter((s) => s.req_per_s !== null && s.requests > 0);
  return {
    stress: {
      requests: metricValue(data, 'request_duration', 'count', 0),
      errors: metricValue(data, 'request_errors', 'count', 0),
      error_rate: metricValue(data, 'http_req_failed', 'rate', null),
      peak_stage_req_per_s: rated.length ? Math.max(...rated.map((s) => s.req_per_s)) : null,
      peak_vus: plan.peak,
      capped: plan.capped,
      stages,
    },
  };
}

export const handleSummary = makeHandleSummary(
  'stress-test',
  (data) => {
    const f = figures(data).stress;
    return [
      `target: ${BASE_URL}  stages: ${describeStages(plan)}  think ${THINK_MS} ms`,
      ...(plan.capped ? [capNote(plan)] : []),
      `latency p50/p95/p99: ${fmtMs(data, 'request_duration', 'med')} / ${fmtMs(data, 'request_duration', 'p(95)')} / ${fmtMs(data, 'request_duration', 'p(99)')}  (max ${fmtMs(data, 'request_duration', 'max')})`,
      `requests:            ${fmtCount(data, 'request_duration')}  (${fmtRate(data, 'http_reqs')} over the whole run; best stage ${f.peak_stage_req_per_s === null ? 'n/a' : `${f.peak_stage_req_per_s}/s`})`,
      `errors:              ${f.errors}  (http_req_failed ${fmtPercent(data, 'http_req_failed')}, checks ${fmtPercent(data, 'checks')})`,
      'per stage (requests counted in the stage they were sent in):',
      ...stageLines(f.stages),
    ];
  },
  CONFIG,
  figures,
);
