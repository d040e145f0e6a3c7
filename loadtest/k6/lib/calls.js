// Call lifecycles for the S2 scenarios (call-state-updates.js, redis-pubsub.js): which states a
// call goes through, and one POST /api/v1/demo/events/call per state.
//
// A lifecycle is INITIATED → RINGING → ANSWERED → COMPLETED (4 updates), or, for FAIL_PERCENT of
// the calls, one that ends in FAILED after INITIATED, RINGING or ANSWERED in turn (2, 3 or 4
// updates; 3 on average). Which calls fail is decided by the iteration number, spread evenly
// (Bresenham-style), so a run is reproducible and its mean updates per call is exact:
// 4 − FAIL_PERCENT/100. An arrival rate in updates/s is therefore RATE iterations per
// meanUpdates(FAIL_PERCENT) seconds.

import http from 'k6/http';

const HAPPY = ['INITIATED', 'RINGING', 'ANSWERED', 'COMPLETED'];

// The states of call number `iteration` (0, 1, 2, … over the whole test).
export function lifecycle(iteration, failPercent) {
  const fails = (iteration * failPercent) % 100 < failPercent && failPercent > 0;
  if (!fails) return HAPPY;
  // The k-th failing call fails after INITIATED, RINGING, ANSWERED for k = 0, 1, 2 (mod 3).
  const k = Math.floor((iteration * failPercent) / 100) % 3;
  return [...HAPPY.slice(0, k + 1), 'FAILED'];
}

export function meanUpdates(failPercent) {
  return 4 - failPercent / 100;
}

// constant-arrival-rate settings that start `updatesPerSecond / meanUpdates` lifecycles per second:
// `rate` iterations per `timeUnit`, both integers as k6 wants them.
export function lifecycleArrival(updatesPerSecond, failPercent) {
  return { rate: updatesPerSecond, timeUnit: `${Math.round(meanUpdates(failPercent) * 1000)}ms` };
}

function phone(n) {
  return `+1555${String(n % 10000000).padStart(7, '0')}`;
}

// POSTs the events of one call in order, stopping at the first answer that is not 200 (the rest
// would only be 409s). onUpdate(res, state) is called after every request. Returns
// {sent, ok, status} — status is the failing answer's, or 200.
export function runLifecycle(url, params, callId, states, n, onUpdate) {
  let sent = 0;
  for (const state of states) {
    const event = { call_id: callId, state };
    if (state === 'INITIATED') {
      event.from = phone(n);
      event.to = phone(n * 7 + 1);
    }
    const res = http.post(url, JSON.stringify(event), params);
    sent += 1;
    onUpdate(res, state);
    if (res.status !== 200) return { sent, ok: false, status: res.status };
  }
  return { sent, ok: true, status: 200 };
}

// A short id for this run, so its call ids cannot collide with an earlier run's.
export function runId() {
  return `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')}`;
}
