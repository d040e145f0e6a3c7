// fluxor-stress.js — the S3 stress test: ramp the gateway's S3 endpoints to 20,000 concurrent users
// to find where it breaks, and check that past its capacity it sheds (503 overloaded, at once)
// instead of failing.
//
//   bash scripts/k6-run.sh loadtest/k6/fluxor-stress.js       (8 min, up to STRESS_VUS; k6-run.sh
//                                                             caps it to the open-files limit)
//   STAGES=2s:20,2s:50,2s:0 k6 run loadtest/k6/fluxor-stress.js   (a quick check)
//
// Shape (the source's, "Fluxor" loadtest/stress-test.js): 1m → 5,000, 2m → 10,000, 2m → 15,000,
// 2m → 20,000, 1m → 0 (levels scale with STRESS_VUS); think 50 ms.
//
// 20,000 VUs need 20,000 sockets in k6 and 20,000 in the gateway, each within its process's
// open-files limit, and 20,000 ephemeral ports towards one address. Where the hard limit is lower
// (20,000 on the reference machine: k6 and the gateway also need a few files of their own),
// scripts/k6-run.sh sets VU_CAP and every stage is capped to it; the result block and the JSON
// (s3.capped, s3.peak_vus, s3.requested_peak_vus) say so. README-S1-S3.md has the OS settings.
//
// What it requests differs from the source on purpose: the source hit only GET /health, which
// bypasses admission control, so it could never show shedding. The default MIX is the load
// test's; MIX=health=1 is the source's exact request.
//
// Thresholds — the source's: http_req_duration p95 < 1000 ms, error rate < 5 %; ours (lib/s3.js):
// admitted p95 < 50 ms, sheds answered < 5 ms (p99), zero connection errors.
//
// Env: GATEWAY_URL (or BASE_URL; http://127.0.0.1:8080), STRESS_VUS (20000), DURATIONS
// (1m,2m,2m,2m,1m) or STAGES (duration:VUs,…), MIX, THINK_MS (50), ECHO_ITEMS (100), CHECK_BODY
// (false), REQUEST_TIMEOUT (60s), THRESH_ADMITTED_P95 (50), THRESH_SHED_MS (5), VU_CAP,
// RESULTS_DIR / SUMMARY_JSON.

import { env, envInt, envNumber } from './lib/common.js';
import { stagePlan } from './lib/stages.js';
import { SOURCE_MIX, parseMix, s3Scenario } from './lib/s3.js';

const STRESS_VUS = envInt('STRESS_VUS', 20000, { min: 1 });
const level = (n) => Math.max(1, Math.round((n * STRESS_VUS) / 20000));
const plan = stagePlan(['1m', '2m', '2m', '2m', '1m'], [level(5000), level(10000), level(15000), STRESS_VUS, 0]);
const THINK_MS = envNumber('THINK_MS', 50);

const scenario = s3Scenario({
  name: 'fluxor-stress',
  plan,
  mix: parseMix(env('MIX', SOURCE_MIX)),
  thinkMinMs: THINK_MS,
  thinkMaxMs: THINK_MS,
  sourceThresholds: {
    http_req_duration: ['p(95)<1000'],
    errors: ['rate<0.05'],
  },
  config: { STRESS_VUS },
});

export const options = scenario.options;
export const setup = scenario.setup;
export default scenario.iteration;
export const teardown = scenario.teardown;
export const handleSummary = scenario.handleSummary;
