// fluxor-spike.js — the S3 spike test: a sudden burst from 100 to 5,000 concurrent users on the
// gateway's S3 endpoints and back, watching admission control absorb it (or shed it).
//
//   bash scripts/k6-run.sh loadtest/k6/fluxor-spike.js        (2 min 40 s, up to 5,000 VUs)
//   STAGES=2s:10,2s:100,2s:100,1s:10,1s:0 k6 run loadtest/k6/fluxor-spike.js   (a quick check)
//
// Shape (the source's, "Fluxor" loadtest/spike-test.js): 30s → BASE_VUS (100), 10s → SPIKE_VUS
// (5,000), 1m at SPIKE_VUS, 30s → BASE_VUS, 30s → 0; think 100 ms.
//
// What it requests differs from the source on purpose: the source's spike hit only GET /health,
// which is not under admission control (SPEC: health, ready and metrics bypass it), so the burst
// never reached the worker pool it was meant to test. Here the default MIX is the load test's
// (70 % of it under admission control); MIX=health=1 is the source's exact request.
//
// Thresholds — the source's: http_req_duration p95 < 500 ms, error rate < 1 %; ours (lib/s3.js):
// admitted p95 < 50 ms, sheds answered < 5 ms (p99), zero connection errors. A 503 `overloaded`
// is a shed, not an error.
//
// Env: GATEWAY_URL (or BASE_URL; http://127.0.0.1:8080), BASE_VUS (100), SPIKE_VUS (5000),
// DURATIONS (30s,10s,1m,30s,30s) or STAGES (duration:VUs,…), MIX, THINK_MS (100), ECHO_ITEMS (100),
// CHECK_BODY (false), REQUEST_TIMEOUT (60s), THRESH_ADMITTED_P95 (50), THRESH_SHED_MS (5),
// VU_CAP (scripts/k6-run.sh), RESULTS_DIR / SUMMARY_JSON.

import { env, envInt, envNumber } from './lib/common.js';
import { stagePlan } from './lib/stages.js';
import { SOURCE_MIX, parseMix, s3Scenario } from './lib/s3.js';

const BASE_VUS = envInt('BASE_VUS', 100, { min: 1 });
const SPIKE_VUS = envInt('SPIKE_VUS', 5000, { min: 1 });
const plan = stagePlan(['30s', '10s', '1m', '30s', '30s'], [BASE_VUS, SPIKE_VUS, SPIKE_VUS, BASE_VUS, 0]);
const THINK_MS = envNumber('THINK_MS', 100);

const scenario = s3Scenario({
  name: 'fluxor-spike',
  plan,
  mix: parseMix(env('MIX', SOURCE_MIX)),
  thinkMinMs: THINK_MS,
  thinkMaxMs: THINK_MS,
  sourceThresholds: {
    http_req_duration: ['p(95)<500'],
    errors: ['rate<0.01'],
  },
  config: { BASE_VUS, SPIKE_VUS },
});

export const options = scenario.options;
export const setup = scenario.setup;
export default scenario.iteration;
export const teardown = scenario.teardown;
export const handleSummary = scenario.handleSummary;
