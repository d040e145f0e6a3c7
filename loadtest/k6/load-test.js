// load-test.js — the S3 load test: the gateway's S3 endpoints under a ramp to 10,000 concurrent
// users, with the source's weighted mix, and admission control (MAX_CCU, UTILIZATION) watched from
// the client side: what was admitted and how fast, what was shed and how fast the 503 came.
//
//   bash scripts/k6-run.sh loadtest/k6/load-test.js        (10 min, up to 10,000 VUs; raises the
//                                                            open-files limit and sets VU_CAP)
//   STAGES=3s:20,4s:20,1s:0 k6 run loadtest/k6/load-test.js  (a quick check)
//
// Shape (the source's, "Fluxor" loadtest/load-test.js): 1m → 1,000, 2m → 5,000, 2m → 10,000 VUs
// (the ramp to 10k over 5 minutes), 3m at 10,000, 2m → 0 (levels scale with PEAK_VUS). Each
// iteration sends one request of the mix — 30 % GET /health, 20 % GET /ready, 20 % GET /api/users,
// 20 % POST /api/echo (the source's 100-item "heavy" JSON body), 10 % GET /api/metrics — then
// thinks 50–150 ms. A closed model: each VU waits for its answer, so when the gateway (or k6: both
// share this machine's cores) slows down, the offered rate drops with it; the per-stage req/s
// shows it.
//
// Thresholds — the source's: http_req_duration p95 < 200 ms, error rate < 0.1 % (errors and
// http_req_failed); ours (lib/s3.js): admitted p95 < 50 ms, sheds answered < 5 ms (p99), zero
// connection errors. A 503 `overloaded` is a shed, not an error (lib/s3.js says why).
//
// Env: GATEWAY_URL (or BASE_URL; http://127.0.0.1:8080), PEAK_VUS (10000), DURATIONS
// (1m,2m,2m,3m,2m) or STAGES (duration:VUs,…), MIX (health=30,ready=20,users=20,echo=20,metrics=10),
// THINK_MIN_MS (50), THINK_MAX_MS (150), ECHO_ITEMS (100), CHECK_BODY (false), REQUEST_TIMEOUT
// (60s), THRESH_ADMITTED_P95 (50), THRESH_SHED_MS (5), VU_CAP (scripts/k6-run.sh),
// RESULTS_DIR / SUMMARY_JSON.

import { env, envInt, envNumber } from './lib/common.js';
import { stagePlan } from './lib/stages.js';
import { SOURCE_MIX, parseMix, s3Scenario } from './lib/s3.js';

const PEAK_VUS = envInt('PEAK_VUS', 10000, { min: 1 });
const level = (n) => Math.max(1, Math.round((n * PEAK_VUS) / 10000));
const plan = stagePlan(['1m', '2m', '2m', '3m', '2m'], [level(1000), level(5000), PEAK_VUS, PEAK_VUS, 0]);
const THINK_MIN_MS = envNumber('THINK_MIN_MS', 50);
const THINK_MAX_MS = envNumber('THINK_MAX_MS', 150);
if (THINK_MAX_MS < THINK_MIN_MS) throw new Error(`THINK_MAX_MS (${THINK_MAX_MS}) is below THINK_MIN_MS (${THINK_MIN_MS})`);

const scenario = s3Scenario({
  name: 'load-test',
  plan,
  mix: parseMix(env('MIX', SOURCE_MIX)),
  thinkMinMs: THINK_MIN_MS,
  thinkMaxMs: THINK_MAX_MS,
  sourceThresholds: {
    http_req_duration: ['p(95)<200'],
    errors: ['rate<0.001'],
    http_req_failed: ['rate<0.001'],
  },
  config: { PEAK_VUS },
});

export const options = scenario.options;
export const setup = scenario.setup;
export default scenario.iteration;
export const teardown = scenario.teardown;
export const handleSummary = scenario.handleSummary;
