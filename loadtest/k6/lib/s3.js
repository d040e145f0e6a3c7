// The gateway's S3 endpoints for k6 (load-test.js, fluxor-spike.js, fluxor-stress.js): the weighted
// request mix, one request per iteration, and the accounting that tells a shed from an error.
//
// The rule this file keeps: a 503 `overloaded` from admission control is the gateway working as
// designed under overload (SPEC: beyond MAX_CCU it answers 503 with Retry-After at once), so it is
// counted as a shed, never as an error. An error is anything else that is not the expected 2xx —
// a 4xx, another 5xx (a 503 from /ready included: /ready is not under admission control), and a
// connection error (no HTTP answer at all: refused, reset, timeout, too many open files).
//
// Each request carries a fixed `name` tag (its route) and a k6 responseCallback that
// makes 503 an expected status on the admitted routes only, so k6's own http_req_failed is the
// error rate by the rule above. Every sample of the custom metrics carries the `stage` it was sent
// in (lib/stages.js), for per-stage figures.
//
// Response bodies are discarded by default (options.discardResponseBodies): at 10,000 VUs reading
// every /api/users answer (~12 KB) costs k6 more CPU than the gateway spends making it. A shed is
// then recognised by status 503 + Retry-After on an admitted route (the only 503 those routes
// send — they have no dependency to be `unavailable` about). CHECK_BODY=true reads every body and
// also checks the 503's error code is `overloaded` and each 2xx body's shape.
//
// Env: GATEWAY_URL (or the source's BASE_URL; http://127.0.0.1:8080), MIX (see parseMix),
// ECHO_ITEMS (100: the items of the source's "heavy" /api/echo payload), CHECK_BODY (false),
// REQUEST_TIMEOUT (60s, k6's default).

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Gauge, Rate, Trend } from 'k6/metrics';
import {
  baseUrl,
  env,
  envBool,
  envDuration,
  envInt,
  envNumber,
  forOptions,
  makeHandleSummary,
  metricValue,
  progress,
  track,
} from './common.js';
import { capNote, describeStages, elapsedMs, stageAt } from './stages.js';

export const GATEWAY_URL = baseUrl('GATEWAY_URL', env('BASE_URL', 'http://127.0.0.1:8080'));
export const CHECK_BODY = envBool('CHECK_BODY', false);
const ECHO_ITEMS = envInt('ECHO_ITEMS', 100);
const REQUEST_TIMEOUT = envDuration('REQUEST_TIMEOUT', '60s');

// The routes of the mix. `admitted`: under admission control (may be shed).
export const ROUTES = {
  health: { method: 'GET', path: '/health', admitted: false, name: 'GET /health' },
  ready: { method: 'GET', path: '/ready', admitted: false, name: 'GET /ready' },
  users: { method: 'GET', path: '/api/users', admitted: true, name: 'GET /api/users' },
  echo: { method: 'POST', path: '/api/echo', admitted: true, name: 'POST /api/echo' },
  metrics: { method: 'GET', path: '/api/metrics', admitted: true, name: 'GET /api/metrics' },
};

// The source's load-test mix: 30 % /health, 20 % /ready, 20 % /api/users, 20 % /api/echo,
// 10 % /api/metrics.
export const SOURCE_MIX = 'health=30,ready=20,users=20,echo=20,metrics=10';

// "health=30,users=70" → [{route, weight, upTo}] with cumulative fractions for one Math.random().
export function parseMix(text) {
  const parts = text.split(',').map((p) => p.trim()).filter(Boolean);
  const entries = parts.map((part) => {
    const [key, weight] = part.split('=');
    if (!ROUTES[key] || !/^\d+(\.\d+)?$/.test(weight || '') || Number(weight) <= 0) {
      throw new Error(`MIX must look like ${SOURCE_MIX} (routes: ${Object.keys(ROUTES).join(', ')}; positive weights), got '${text}'`);
    }
    return { key, weight: Number(weight) };
  });
  if (!entries.length) throw new Error('MIX is empty');
  const total = entries.reduce((sum, e) => sum + e.weight, 0);
  let upTo = 0;
  return entries.map((e) => {
    upTo += e.weight / total;
    return { key: e.key, route: ROUTES[e.key], share: e.weight / total, upTo };
  });
}

export function describeMix(mix) {
  return mix.map((m) => `${Math.round(m.share * 1000) / 10} % ${m.route.name}`).join(', ');
}

export function pick(mix) {
  const r = Math.random();
  for (const m of mix) if (r < m.upTo) return m;
  return mix[mix.length - 1];
}

// The metrics. Names are plain so the summary reads well; the source's own `errors` Rate is kept.
export const metrics = {
  errors: new Rate('errors'), // every request: 1 = error (not 2xx, not a shed)
  shedRate: new Rate('shed_rate'), // requests to admitted routes: 1 = shed
  shed: new Counter('shed'),
  shedDuration: new Trend('shed_duration', true), // time to the 503: how fast a shed is answered
  admittedDuration: new Trend('admitted_duration', true), // 2xx answers of admitted routes
  okDuration: new Trend('ok_duration', true), // every 2xx answer
  connectionErrors: new Counter('connection_errors'), // no HTTP answer at all
  errors4xx: new Counter('errors_4xx'),
  errors5xx: new Counter('errors_5xx'), // 5xx other than a shed
};

const ADMITTED_CALLBACK = http.expectedStatuses({ min: 200, max: 299 }, 503);
const PLAIN_CALLBACK = http.expectedStatuses({ min: 200, max: 299 });

// The source's "heavy JSON" echo body: ECHO_ITEMS items with a nested object each (~20 KB at 100).
// Built once per VU, on its first echo, and reused: generating it per request (as the source did)
// would measure k6's JSON.stringify.
let echoBody;
function heavyPayload() {
  if (echoBody === undefined) {
    const now = new Date().toISOString();
    const items = [];
    for (let i = 0; i < ECHO_ITEMS; i += 1) {
      items.push({
        id: i,
        name: `Item ${i}`,
        description: `This is a description for item ${i}`,
        price: Math.round(Math.random() * 100000) / 100,
        quantity: Math.floor(Math.random() * 100),
        metadata: { created: now, updated: now, tags: ['tag1', 'tag2', 'tag3'] },
      });
    }
    echoBody = JSON.stringify({ items, total: items.length });
  }
  return echoBody;
}

const paramsCache = {};
function params(route) {
  if (!paramsCache[route.name]) {
    paramsCache[route.name] = {
      tags: { name: route.name },
      timeout: REQUEST_TIMEOUT,
      responseCallback: route.admitted ? ADMITTED_CALLBACK : PLAIN_CALLBACK,
      headers: route.method === 'POST' ? { 'Content-Type': 'application/json' } : {},
      // With bodies discarded for the run, CHECK_BODY asks for them back.
      ...(CHECK_BODY ? { responseType: 'text' } : {}),
    };
  }
  return paramsCache[route.name];
}

function jsonField(res, field) {
  try {
    return res.json(field);
  } catch (_) {
    return undefined;
  }
}

// The 2xx body each route must send (CHECK_BODY only).
const BODY_CHECKS = {
  health: (r) => jsonField(r, 'status') === 'ok',
  ready: (r) => jsonField(r, 'status') === 'ready',
  users: (r) => Array.isArray(jsonField(r, '@this')) && jsonField(r, '#') > 0,
  echo: (r) => jsonField(r, 'total') === ECHO_ITEMS,
  metrics: (r) => typeof jsonField(r, 'workers') === 'number' && typeof jsonField(r, 'shed_total') === 'number',
};

let loggedErrors = 0;

// Sends one request of the mix and accounts for it. Returns 'ok' | 'shed' | 'error'.
export function send(entry, tags) {
  const { key, route } = entry;
  const url = `${GATEWAY_URL}${route.path}`;
  const res = route.method === 'POST' ? http.post(url, heavyPayload(), params(route)) : http.get(url, params(route));
  const status = res.status;
  const duration = res.timings.duration;
  let outcome;
  if (status >= 200 && status < 300) {
    outcome = 'ok';
    metrics.okDuration.add(duration, tags);
    if (route.admitted) metrics.admittedDuration.add(duration, tags);
    if (CHECK_BODY) check(res, { [`${route.name}: 2xx body`]: BODY_CHECKS[key] });
  } else if (status === 503 && route.admitted && res.headers['Retry-After'] !== undefined &&
    (!CHECK_BODY || jsonField(res, 'error.code') === 'overloaded')) {
    outcome = 'shed';
    metrics.shed.add(1, tags);
    metrics.shedDuration.add(duration, tags);
  } else {
    outcome = 'error';
    if (status === 0) metrics.connectionErrors.add(1, { ...tags, error_code: String(res.error_code) });
    else if (status >= 500) metrics.errors5xx.add(1, tags);
    else metrics.errors4xx.add(1, tags);
    if (loggedErrors < 3) {
      loggedErrors += 1;
      console.error(`VU ${__VU}: ${route.name} → ${status}${res.error ? ` (${res.error})` : ''}`);
    }
  }
  metrics.errors.add(outcome === 'error', tags);
  if (route.admitted) metrics.shedRate.add(outcome === 'shed', tags);
  return outcome;
}

// options.thresholds entries so every per-route and per-stage figure reaches the summary.
export function trackS3(thresholds, mix, plan) {
  for (const m of mix) track(thresholds, `http_req_duration{name:${m.route.name}}`, 'trend');
  plan.bounds.forEach((_, i) => {
    track(thresholds, `ok_duration{stage:${i}}`, 'trend');
    track(thresholds, `admitted_duration{stage:${i}}`, 'trend');
    track(thresholds, `shed_duration{stage:${i}}`, 'trend');
    track(thresholds, `errors{stage:${i}}`, 'rate');
    track(thresholds, `connection_errors{stage:${i}}`, 'counter');
  });
}

// /api/metrics, read outside the measured mix (setup, teardown, progress). null when unreachable.
export function gatewaySnapshot() {
  const res = http.get(`${GATEWAY_URL}/api/metrics`, {
    tags: { name: 'snapshot /api/metrics' },
    responseType: 'text',
    timeout: '5s',
    responseCallback: ADMITTED_CALLBACK,
  });
  if (res.status !== 200) return null;
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

// For progress lines: "gateway inflight 12, queued 0, shed so far 0".
export function gatewayProgress() {
  const g = gatewaySnapshot();
  return g ? `gateway inflight ${g.inflight}, queued ${g.queued}, shed since start ${g.shed_total}` : 'gateway /api/metrics: no answer';
}

// For setup(): the gateway answers /ready (and shows its admission limits), or the run stops now.
export function requireGateway() {
  const res = http.get(`${GATEWAY_URL}/ready`, { tags: { name: 'setup /ready' }, responseType: 'text', timeout: '5s' });
  if (res.status !== 200) {
    throw new Error(
      `gateway not ready at ${GATEWAY_URL}/ready: status ${res.status} (${res.error || String(res.body).slice(0, 200)}). ` +
        'Start the stack (scripts/stack.sh up) or set GATEWAY_URL.',
    );
  }
  return gatewaySnapshot();
}

function round(value, digits = 3) {
  return value === null || value === undefined ? null : Number(value.toFixed(digits));
}

function trendFigures(data, name) {
  const count = metricValue(data, name, 'count', 0);
  return {
    count,
    p50_ms: count ? round(metricValue(data, name, 'med', null)) : null,
    p95_ms: count ? round(metricValue(data, name, 'p(95)', null)) : null,
    p99_ms: count ? round(metricValue(data, name, 'p(99)', null)) : null,
    max_ms: count ? round(metricValue(data, name, 'max', null)) : null,
  };
}

// The figures every S3 scenario reports (its JSON `s3` block).
export function s3Figures(data, mix, plan) {
  const gateway = gatewayFromSummary(data);
  // The mix's requests (every one adds a sample to `errors`); setup's and teardown's are not.
  const requests = metricValue(data, 'errors', 'passes', 0) + metricValue(data, 'errors', 'fails', 0);
  const errors = Math.round(metricValue(data, 'errors', 'passes', 0));
  const shed = metricValue(data, 'shed', 'count', 0);
  const toAdmitted = metricValue(data, 'shed_rate', 'passes', 0) + metricValue(data, 'shed_rate', 'fails', 0);
  const seconds = plan.totalMs / 1000;
  const stages = plan.bounds.map((b, i) => {
    const ok = metricValue(data, `ok_duration{stage:${i}}`, 'count', 0);
    const stageShed = metricValue(data, `shed_duration{stage:${i}}`, 'count', 0);
    const stageErrors = metricValue(data, `errors{stage:${i}}`, 'passes', 0);
    const length = (b.end - b.start) / 1000;
    return {
      stage: i,
      duration: plan.stages[i].duration,
      from_vus: i === 0 ? 0 : plan.bounds[i - 1].target,
      to_vus: b.target,
      ok,
      shed: stageShed,
      errors: stageErrors,
      connection_errors: metricValue(data, `connection_errors{stage:${i}}`, 'count', 0),
      req_per_s: length > 0 ? round((ok + stageShed + stageErrors) / length, 1) : null,
      admitted_p95_ms: round(metricValue(data, `admitted_duration{stage:${i}}`, 'count', 0)
        ? metricValue(data, `admitted_duration{stage:${i}}`, 'p(95)', null) : null),
      shed_p95_ms: round(stageShed ? metricValue(data, `shed_duration{stage:${i}}`, 'p(95)', null) : null),
    };
  });
  const routes = {};
  for (const m of mix) {
    routes[m.key] = trendFigures(data, `http_req_duration{name:${m.route.name}}`);
  }
  return {
    s3: {
      requests,
      req_per_s: round(requests / seconds, 1),
      ok: metricValue(data, 'ok_duration', 'count', 0),
      errors,
      error_rate: requests ? errors / requests : null,
      errors_4xx: metricValue(data, 'errors_4xx', 'count', 0),
      errors_5xx: metricValue(data, 'errors_5xx', 'count', 0),
      connection_errors: metricValue(data, 'connection_errors', 'count', 0),
      shed,
      // of the requests to admitted routes (the only ones that can be shed)
      shed_rate: toAdmitted ? shed / toAdmitted : null,
      shed_per_s: round(shed / seconds, 1),
      admitted: trendFigures(data, 'admitted_duration'),
      time_to_503: trendFigures(data, 'shed_duration'),
      all_2xx: trendFigures(data, 'ok_duration'),
      routes,
      stages,
      peak_vus: plan.peak,
      requested_peak_vus: plan.requestedPeak,
      capped: plan.capped,
      vu_cap: plan.cap || null,
      gateway,
    },
  };
}

function msText(value) {
  return value === null ? 'n/a' : `${value.toFixed(2)} ms`;
}

function pct(value) {
  return value === null ? 'n/a' : `${(value * 100).toFixed(3)} %`;
}

// The result block's lines for the `s3` figures.
export function s3Lines(f) {
  const lines = [
    `requests:          ${f.requests}  (${f.req_per_s}/s over the stages)`,
    `admitted (2xx on /api/*) p50/p95/p99: ${msText(f.admitted.p50_ms)} / ${msText(f.admitted.p95_ms)} / ${msText(f.admitted.p99_ms)}  (max ${msText(f.admitted.max_ms)}, ${f.admitted.count} answers)`,
    `every 2xx p95:     ${msText(f.all_2xx.p95_ms)}`,
    `shed (503 overloaded): ${f.shed}  (${pct(f.shed_rate)} of the requests to /api/*, ${f.shed_per_s}/s)`,
    `time to 503 p50/p95/max: ${msText(f.time_to_503.p50_ms)} / ${msText(f.time_to_503.p95_ms)} / ${msText(f.time_to_503.max_ms)}`,
    `errors:            ${f.errors}  (${pct(f.error_rate)}: 4xx ${f.errors_4xx}, 5xx other than a shed ${f.errors_5xx}, connection errors ${f.connection_errors})`,
  ];
  if (f.gateway) {
    lines.push(
      `gateway's count over the run (/api/metrics): admitted ${f.gateway.admitted}, shed ${f.gateway.shed} ` +
        `(workers ${f.gateway.workers}, queue ${f.gateway.queue_capacity})`,
    );
  }
  lines.push('per route p50 / p95 / p99:');
  for (const [key, r] of Object.entries(f.routes)) {
    lines.push(`  ${ROUTES[key].name.padEnd(18)} ${msText(r.p50_ms)} / ${msText(r.p95_ms)} / ${msText(r.p99_ms)}  (${r.count})`);
  }
  lines.push('per stage:', '  stage  duration  VUs            req/s      admitted p95   shed      shed p95   errors  conn errors');
  for (const s of f.stages) {
    lines.push(
      `  ${String(s.stage + 1).padEnd(5)}  ${s.duration.padEnd(8)}  ${`${s.from_vus}→${s.to_vus}`.padEnd(13)}  ` +
        `${String(s.req_per_s).padStart(9)}   ${msText(s.admitted_p95_ms).padStart(12)}   ${String(s.shed).padStart(7)}  ` +
        `${msText(s.shed_p95_ms).padStart(9)}  ${String(s.errors).padStart(6)}  ${String(s.connection_errors).padStart(11)}`,
    );
  }
  return lines;
}

// The standard options of an S3 scenario.
export function s3Options(plan, thresholds, testType) {
  return {
    stages: plan.stages,
    thresholds,
    discardResponseBodies: !CHECK_BODY,
    summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
    tags: { test_type: testType },
    setupTimeout: '60s',
    teardownTimeout: '60s',
  };
}

// The gateway's own admitted/shed counts over the run — teardown's /api/metrics minus setup's —
// carried to handleSummary as gauges (teardown's return value does not reach it).
const gatewayGauges = {
  admitted: new Gauge('gateway_admitted'),
  shed: new Gauge('gateway_shed'),
  workers: new Gauge('gateway_workers'),
  queue_capacity: new Gauge('gateway_queue_capacity'),
};

export function recordGatewayDelta(before) {
  const after = gatewaySnapshot();
  if (!before || !after) return;
  gatewayGauges.admitted.add(after.admitted_total - before.admitted_total);
  gatewayGauges.shed.add(after.shed_total - before.shed_total);
  gatewayGauges.workers.add(after.workers);
  gatewayGauges.queue_capacity.add(after.queue_capacity);
}

export function gatewayFromSummary(data) {
  if (metricValue(data, 'gateway_admitted', 'value', null) === null) return null;
  const out = {};
  for (const key of Object.keys(gatewayGauges)) out[key] = metricValue(data, `gateway_${key}`, 'value', null);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The scenario itself: the three S3 scripts differ only in their stages, think time, mix and the
// source's thresholds, so each builds its k6 exports here.
//
//   s3Scenario({ name, plan, mix, thinkMinMs, thinkMaxMs, sourceThresholds, config })
//     → { options, iteration, setup, teardown, handleSummary }
//
// Our thresholds, on top of the source's: admitted p95 < THRESH_ADMITTED_P95 (50 ms), a shed
// answered in < THRESH_SHED_MS (5 ms, at p99), no connection error at all.

export function s3Scenario({ name, plan, mix, thinkMinMs, thinkMaxMs, sourceThresholds, config }) {
  const admittedP95 = envNumber('THRESH_ADMITTED_P95', 50, { min: 0, exclusiveMin: true });
  const shedMs = envNumber('THRESH_SHED_MS', 5, { min: 0, exclusiveMin: true });
  const thresholds = forOptions(() => {
    const all = { ...sourceThresholds };
    const add = (metric, expr) => {
      all[metric] = [...(all[metric] || []), expr];
    };
    add('admitted_duration', `p(95)<${admittedP95}`);
    add('shed_duration', `p(99)<${shedMs}`);
    add('connection_errors', 'count<1');
    trackS3(all, mix, plan);
    return all;
  }, {});

  const thinkText = thinkMinMs === thinkMaxMs ? `${thinkMinMs} ms` : `${thinkMinMs}–${thinkMaxMs} ms`;
  const think = () => (thinkMinMs + Math.random() * (thinkMaxMs - thinkMinMs)) / 1000;
  const fullConfig = {
    GATEWAY_URL, MIX: describeMix(mix), STAGES: plan.stages, VU_CAP: plan.cap || null, THINK_MIN_MS: thinkMinMs,
    THINK_MAX_MS: thinkMaxMs, CHECK_BODY, ECHO_ITEMS, THRESH_ADMITTED_P95: admittedP95, THRESH_SHED_MS: shedMs, ...config,
  };

  return {
    options: s3Options(plan, thresholds, name),
    setup() {
      const before = requireGateway();
      console.log(
        `${name}: ${describeStages(plan)} → ${GATEWAY_URL}; mix ${describeMix(mix)}; think ${thinkText}` +
          (before ? `; gateway admission: ${before.workers} workers + ${before.queue_capacity} queued` : ''),
      );
      if (plan.capped) console.warn(capNote(plan));
      return { before };
    },
    iteration() {
      const stage = String(stageAt(plan, elapsedMs()));
      send(pick(mix), { stage });
      progress(name, 30000, gatewayProgress);
      sleep(think());
    },
    teardown(data) {
      recordGatewayDelta(data && data.before);
    },
    handleSummary: makeHandleSummary(
      name,
      (data) => [
        `target: ${GATEWAY_URL}  stages: ${describeStages(plan)}  think ${thinkText}`,
        `mix: ${describeMix(mix)}${CHECK_BODY ? '' : '  (bodies not read: CHECK_BODY=false)'}`,
        ...(plan.capped ? [capNote(plan)] : []),
        ...s3Lines(s3Figures(data, mix, plan).s3),
      ],
      fullConfig,
      (data) => s3Figures(data, mix, plan),
    ),
  };
}
