// Ramping-VU stages for the S1 and S3 scenarios: the source's shape by default, every duration and
// VU level overridable from env, every level capped by VU_CAP, and which stage a moment of the run
// falls in (for per-stage and per-phase figures).
//
// VU_CAP is the number of VUs the open-files limit allows: k6 holds one socket per VU and the
// server one per connection, so past the hard limit a run measures "too many open files", not the
// server. scripts/k6-run.sh sets it from `ulimit -Hn`; with plain `k6 run` there is no cap.
//
//   STAGES="30s:100,10s:1000,30s:0"   replaces the whole shape (duration:target, comma-separated)
//   DURATIONS="30s,1m,5m,30s"         replaces only the durations (as many as the source's stages)
//   the scripts' own VU variables     (VUS, SPIKE_VUS, STRESS_VUS, …) set the levels

import exec from 'k6/execution';
import { durationMs, env, envInt, metricValue, track } from './common.js';

const DURATION_RE = /^(\d+(\.\d+)?(ms|s|m|h))+$/;

function parseStages(text) {
  return text.split(',').map((part) => {
    const [duration, target] = part.trim().split(':');
    if (!DURATION_RE.test(duration || '') || !/^\d+$/.test(target || '')) {
      throw new Error(`STAGES must look like 30s:100,1m:500,10s:0 (duration:VUs, comma-separated), got '${text}'`);
    }
    return { duration, target: Number(target) };
  });
}

function parseDurations(text, count) {
  const durations = text.split(',').map((d) => d.trim());
  if (durations.length !== count || !durations.every((d) => DURATION_RE.test(d))) {
    throw new Error(`DURATIONS must be ${count} durations like 30s,1m,… (one per stage), got '${text}'`);
  }
  return durations;
}

// stagePlan(['30s', '1m'], [50, 100]) → { stages, peak, requestedPeak, cap, capped, totalMs, bounds }.
export function stagePlan(defaultDurations, targets) {
  let stages;
  const explicit = env('STAGES', undefined);
  if (explicit) {
    stages = parseStages(explicit);
  } else {
    const overridden = env('DURATIONS', undefined);
    const durations = overridden ? parseDurations(overridden, targets.length) : defaultDurations;
    stages = durations.map((duration, i) => ({ duration, target: targets[i] }));
  }
  const requestedPeak = Math.max(...stages.map((s) => s.target));
  const cap = envInt('VU_CAP', 0);
  if (cap > 0) stages = stages.map((s) => ({ duration: s.duration, target: Math.min(s.target, cap) }));
  const peak = Math.max(...stages.map((s) => s.target));
  if (peak < 1) throw new Error('every stage targets 0 VUs: nothing to run');
  let t = 0;
  const bounds = stages.map((s) => {
    const start = t;
    t += durationMs(s.duration);
    return { start, end: t, target: s.target };
  });
  return { stages, peak, requestedPeak, cap, capped: peak < requestedPeak, totalMs: t, bounds };
}

// "capped: 20000 VUs asked, 19488 run (VU_CAP, the open-files limit)" or ''.
export function capNote(plan) {
  return plan.capped
    ? `CAPPED: ${plan.requestedPeak} VUs asked for, at most ${plan.peak} run (VU_CAP=${plan.cap}: the open-files limit, one socket per VU)`
    : '';
}

// Milliseconds since this scenario started (the stage clock; setup is not counted). The start is
// read once per VU: exec.scenario builds a fresh object on every access, which at thousands of
// requests per second is a measurable share of k6's CPU.
let scenarioStart;
export function elapsedMs() {
  if (scenarioStart === undefined) scenarioStart = exec.scenario.startTime;
  return Date.now() - scenarioStart;
}

// The stage index (0-based) a moment falls in; stages.length during the graceful ramp-down after.
export function stageAt(plan, ms) {
  const i = plan.bounds.findIndex((b) => ms < b.end);
  return i < 0 ? plan.bounds.length : i;
}

// The longest stage held at the peak (it starts and ends at plan.peak VUs), or -1: the source's
// "sustained phase".
export function steadyStage(plan) {
  let best = -1;
  plan.bounds.forEach((b, i) => {
    const from = i === 0 ? 0 : plan.bounds[i - 1].target;
    const held = b.target === plan.peak && from === plan.peak;
    if (held && (best < 0 || b.end - b.start > plan.bounds[best].end - plan.bounds[best].start)) best = i;
  });
  return best;
}

// "1m→100, 2m→500, …" for the result block.
export function describeStages(plan) {
  return plan.stages.map((s) => `${s.duration}→${s.target}`).join(', ');
}

// Per-stage figures of a Trend whose samples carry a `stage` tag (stageAt's index): the script
// calls trackStages(thresholds, plan, 'request_duration') in its options so the submetrics reach
// the summary, then stageFigures(data, plan, 'request_duration') in handleSummary.
export function trackStages(thresholds, plan, trend) {
  plan.bounds.forEach((_, i) => track(thresholds, `${trend}{stage:${i}}`, 'trend'));
}

function round(value, digits = 3) {
  return value === null || value === undefined ? null : Number(value.toFixed(digits));
}

export function stageFigures(data, plan, trend) {
  return plan.bounds.map((b, i) => {
    const key = `${trend}{stage:${i}}`;
    const requests = metricValue(data, key, 'count', 0);
    const seconds = (b.end - b.start) / 1000;
    return {
      stage: i,
      duration: plan.stages[i].duration,
      from_vus: i === 0 ? plan.startVUs || 0 : plan.bounds[i - 1].target,
      to_vus: b.target,
      requests,
      req_per_s: seconds > 0 ? round(requests / seconds, 1) : null,
      p50_ms: requests ? round(metricValue(data, key, 'med', null)) : null,
      p95_ms: requests ? round(metricValue(data, key, 'p(95)', null)) : null,
      p99_ms: requests ? round(metricValue(data, key, 'p(99)', null)) : null,
    };
  });
}

function ms(value) {
  return value === null ? '    n/a' : `${value.toFixed(2).padStart(7)}`;
}

// The per-stage table of the result block.
export function stageLines(figures) {
  const lines = ['  stage  duration  VUs            req/s      p50 ms   p95 ms   p99 ms  requests'];
  for (const f of figures) {
    const vus = `${f.from_vus}→${f.to_vus}`.padEnd(13);
    const rps = f.req_per_s === null ? 'n/a' : f.req_per_s.toFixed(1);
    lines.push(
      `  ${String(f.stage + 1).padEnd(5)}  ${f.duration.padEnd(8)}  ${vus}  ${rps.padStart(9)}   ${ms(f.p50_ms)}  ${ms(f.p95_ms)}  ${ms(f.p99_ms)}  ${f.requests}`,
    );
  }
  return lines;
}
