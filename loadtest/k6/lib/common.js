// Shared by every k6 scenario: typed env helpers, base URLs and token, and the end-of-test summary
// (a JSON file under loadtest/results/ plus a short block a person can read on stdout).
// Every knob of a scenario is an env var read through these helpers, so a bad value stops the run
// at once with one line naming the variable instead of producing a meaningless result.

import encoding from 'k6/encoding';
import exec from 'k6/execution';

export function env(name, defaultValue) {
  const value = __ENV[name];
  return value === undefined || value === '' ? defaultValue : value;
}

function fail(message) {
  throw new Error(message);
}

export function envInt(name, defaultValue, { min = 0 } = {}) {
  const raw = env(name, undefined);
  if (raw === undefined) return defaultValue;
  if (!/^\d+$/.test(String(raw)) || Number(raw) < min) {
    fail(`${name} must be an integer >= ${min}, got '${raw}'`);
  }
  return Number(raw);
}

export function envNumber(name, defaultValue, { min = 0, exclusiveMin = false } = {}) {
  const raw = env(name, undefined);
  if (raw === undefined) return defaultValue;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || (exclusiveMin && value === min)) {
    fail(`${name} must be a number ${exclusiveMin ? '>' : '>='} ${min}, got '${raw}'`);
  }
  return value;
}

export function envBool(name, defaultValue) {
  const raw = env(name, undefined);
  if (raw === undefined) return defaultValue;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  return fail(`${name} must be true or false, got '${raw}'`);
}

// k6 duration strings: 30s, 5m, 1h30m, 250ms.
export function envDuration(name, defaultValue) {
  const value = env(name, defaultValue);
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(value)) {
    fail(`${name} must be a duration like 30s, 5m or 1h, got '${value}'`);
  }
  return value;
}

// A k6 duration string in milliseconds: durationMs('1m30s') === 90000.
export function durationMs(text) {
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  for (const [, number, suffix] of String(text).matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(number) * unit[suffix];
  }
  return total;
}

export function envChoice(name, defaultValue, choices) {
  const value = env(name, defaultValue);
  if (!choices.includes(value)) fail(`${name} must be one of ${choices.join('|')}, got '${value}'`);
  return value;
}

export function baseUrl(name = 'GATEWAY_URL', defaultValue = 'http://localhost:8080') {
  const url = env(name, defaultValue).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]+/.test(url)) fail(`${name} must be an http(s):// URL, got '${url}'`);
  return url;
}

// http://host → ws://host, https://host → wss://host.
export function toWsUrl(httpUrl) {
  return httpUrl.replace(/^http/, 'ws');
}

// `how` tells where a token comes from, for the error line.
export function requireToken(name = 'ACCESS_TOKEN', how = undefined) {
  const token = env(name, undefined);
  if (!token) {
    fail(`${name} is required: ${how || `${name}=$(bash scripts/gen-jwt.sh user-1) k6 run … (scripts/perf-load.sh mints one)`}`);
  }
  return token;
}

// For the tenant-scoped (S2) scenarios: TOKEN with a `tenant` claim.
export const TENANT_TOKEN_HOW =
  'TOKEN=$(bash scripts/gen-jwt.sh user-1 --tenant 00000000-0000-0000-0000-000000000000) k6 run … (scripts/k6-run.sh mints one)';

// The claims of a JWT, decoded without checking the signature (the server does that): lets a
// scenario stop at once on a token that lacks a claim it needs, e.g. `tenant`.
export function tokenClaims(token, name = 'TOKEN') {
  const parts = token.split('.');
  if (parts.length !== 3) fail(`${name} is not a JWT (expected three dot-separated parts)`);
  try {
    return JSON.parse(encoding.b64decode(parts[1], 'rawurl', 's'));
  } catch (e) {
    return fail(`${name}: cannot decode the JWT payload (${e})`);
  }
}

// k6 runs a script's init code once per VU (__VU 1..N), and also with __VU 0 to read `options`,
// for setup() and for handleSummary(). Only the __VU 0 contexts need the options' thresholds and
// the summary's bookkeeping; building them in every VU too cost about 0.035 MB per VU for the S3
// scripts (0.7 GB at 20,000 VUs), for nothing. `forOptions(() => …, fallback)` builds them only where they are read.
export function forOptions(build, fallback = undefined) {
  return __VU === 0 ? build() : fallback;
}

// ---------------------------------------------------------------------------------------------
// Progress

let lastProgress = 0;

// progress('load-test', 30000, () => 'shed 12 %'): one line every `everyMs` from VU 1 (the first
// VU started and the last stopped by a ramp), so a long run shows it is alive: elapsed time,
// active VUs, iterations so far, and `extra()`'s text. Call it at the end of each iteration.
export function progress(label, everyMs = 30000, extra = undefined) {
  if (__VU !== 1) return; // __VU, not exec.vu.idInTest: exec.vu is rebuilt on every access
  const now = Date.now();
  if (now - lastProgress < everyMs) return;
  lastProgress = now;
  const elapsed = Math.round(exec.instance.currentTestRunDuration / 1000);
  const text = `[${label}] ${Math.floor(elapsed / 60)}m${String(elapsed % 60).padStart(2, '0')}s  ` +
    `VUs ${exec.instance.vusActive}  iterations ${exec.instance.iterationsCompleted}`;
  console.log(extra ? `${text}  ${extra()}` : text);
}

// ---------------------------------------------------------------------------------------------
// Summary

function metric(data, name) {
  return data.metrics[name] ? data.metrics[name].values : undefined;
}

// One figure of a metric (count, rate, p(95), …), or `fallback` when the metric never got a sample.
export function metricValue(data, name, stat, fallback = undefined) {
  const values = metric(data, name);
  return values && values[stat] !== undefined ? values[stat] : fallback;
}

export function fmtMs(data, name, stat) {
  const values = metric(data, name);
  return values && values[stat] !== undefined ? `${values[stat].toFixed(2)} ms` : 'n/a';
}

export function fmtRate(data, name, unit = '/s') {
  const values = metric(data, name);
  return values && values.rate !== undefined ? `${values.rate.toFixed(1)}${unit}` : 'n/a';
}

export function fmtPercent(data, name) {
  const values = metric(data, name);
  return values && values.rate !== undefined ? `${(values.rate * 100).toFixed(2)} %` : 'n/a';
}

export function fmtCount(data, name) {
  const values = metric(data, name);
  return values && values.count !== undefined ? String(values.count) : '0';
}

// Submetrics a script tracks only to read them back in handleSummary (per second, per stage):
// k6 puts a tagged submetric into the summary only when a threshold names it, so such a script
// gives it an always-true threshold through track(); those are left out of the verdict lines.
const TRACKED = new Set();
const TRACK_EXPR = { trend: 'max>=0', counter: 'count>=0', rate: 'rate>=0' };

// track(thresholds, 'request_duration{sec:12}', 'trend') → the submetric is in data.metrics.
export function track(thresholds, name, kind = 'trend') {
  thresholds[name] = [...(thresholds[name] || []), TRACK_EXPR[kind]];
  TRACKED.add(`${name} ${TRACK_EXPR[kind]}`);
}

// One line per threshold: "PASS http_req_duration p(95)<250".
function thresholdLines(data) {
  const lines = [];
  for (const [name, m] of Object.entries(data.metrics)) {
    for (const [expr, result] of Object.entries(m.thresholds || {})) {
      if (TRACKED.has(`${name} ${expr}`)) continue;
      lines.push(`  ${result.ok ? 'PASS' : 'FAIL'}  ${name} ${expr}`);
    }
  }
  return lines.sort();
}

function timestamp() {
  // 2026-02-03T10-04-05Z: sortable, and safe in file names everywhere.
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
}

export function summaryPath(scenario) {
  const explicit = env('SUMMARY_JSON', undefined);
  if (explicit) return explicit;
  const dir = env('RESULTS_DIR', 'loadtest/results').replace(/\/+$/, '');
  return `${dir}/${scenario}-${timestamp()}.json`;
}

// makeHandleSummary('perf-load', (data) => ['line', …], config) → a k6 handleSummary function.
// The JSON file holds k6's whole summary plus {scenario, config, finished_at}; stdout gets the
// scenario's own lines, then every threshold's verdict, then where the JSON went.
// `extra(data)`, when given, returns figures computed from the summary after the run (such as a
// ratio of two counters, which a k6 threshold cannot express): they go into the JSON beside k6's
// own, under their own keys, never into `metrics`.
export function makeHandleSummary(scenario, describe, config = {}, extra = undefined) {
  return function handleSummary(data) {
    const path = summaryPath(scenario);
    const lines = [
      '',
      `== ${scenario} summary ==`,
      ...describe(data),
      'thresholds:',
      ...thresholdLines(data),
      `summary JSON: ${path}`,
      '',
    ];
    const json = { scenario, config, finished_at: new Date().toISOString(), ...(extra ? extra(data) : {}), ...data };
    return {
      stdout: lines.join('\n') + '\n',
      [path]: JSON.stringify(json, null, 2),
    };
  };
}
