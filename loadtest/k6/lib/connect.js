// The S1 interceptor-overhead server (storm-interceptors) for k6: where its five listeners are,
// its one call — the Connect protocol's unary JSON form of greeter.v1.GreeterService/SayHello —
// and the checks every S1 scenario makes on the answer.
//
// Env, with the source's names so its own overrides work here too:
//   BASE_HOST       127.0.0.1
//   PROTOCOL        http (the stack serves plain HTTP; https when started with
//                   INTERCEPTORS_TLS=self-signed — certificate checks are off, as in the source)
//   FULLCHAIN_PORT  8180   BASELINE_PORT 8181   VALIDATION_PORT 8182   LOGGER_PORT 8183
//   TRACING_PORT    8184   (the source's 8080–8084 moved by 100, SPEC "Interceptor-overhead server")
//   BASE_URL        the listener basic-load, stress-test and spike-test call; default
//                   PROTOCOL://BASE_HOST:FULLCHAIN_PORT — the full chain, as in the source

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import { baseUrl, env, envChoice, envInt } from './common.js';

export const SERVICE_PATH = '/greeter.v1.GreeterService/SayHello';
export const HEALTH_PATH = '/grpc.health.v1.Health/Check';

export const PROTOCOL = envChoice('PROTOCOL', 'http', ['http', 'https']);
export const BASE_HOST = env('BASE_HOST', '127.0.0.1');
if (!/^[A-Za-z0-9.\-_:[\]]+$/.test(BASE_HOST)) {
  throw new Error(`BASE_HOST must be a host name or address (no scheme, no port), got '${BASE_HOST}'`);
}

function port(name, defaultValue) {
  const value = envInt(name, defaultValue, { min: 1 });
  if (value > 65535) throw new Error(`${name} must be a TCP port (1–65535), got '${value}'`);
  return value;
}

// The five chains and their listeners (SPEC: full 8180, baseline 8181, validation 8182,
// logger 8183, tracing 8184).
export const PORTS = {
  baseline: port('BASELINE_PORT', 8181),
  validation: port('VALIDATION_PORT', 8182),
  logger: port('LOGGER_PORT', 8183),
  tracing: port('TRACING_PORT', 8184),
  fullchain: port('FULLCHAIN_PORT', 8180),
};

export function listenerUrl(listenerPort) {
  const host = BASE_HOST.includes(':') && !BASE_HOST.startsWith('[') ? `[${BASE_HOST}]` : BASE_HOST;
  return `${PROTOCOL}://${host}:${listenerPort}`;
}

// The listener of the single-target scenarios.
export const BASE_URL = baseUrl('BASE_URL', listenerUrl(PORTS.fullchain));

// Every S1 scenario's options include these: the source turns certificate checks off for its
// self-signed HTTPS server.
export const TLS_OPTIONS = { insecureSkipTLSVerify: true };

const HEADERS = {
  'Content-Type': 'application/json',
  'Connect-Protocol-Version': '1',
};

// One SayHello call. `tags` should hold a fixed `name` (k6 keeps one time series per name).
export function sayHello(url, name, tags = { name: 'SayHello' }) {
  return http.post(`${url}${SERVICE_PATH}`, JSON.stringify({ name }), { headers: HEADERS, tags });
}

function greeting(res) {
  try {
    return res.json('greeting');
  } catch (_) {
    return undefined;
  }
}

// Checks a SayHello answer: 200 and {"greeting": "Hello, <name>!"}. `label` prefixes the check
// names (e.g. "validation: status is 200"). Returns whether every check passed.
export function checkGreeting(res, name, label = '') {
  const prefix = label ? `${label}: ` : '';
  return check(res, {
    [`${prefix}status is 200`]: (r) => r.status === 200,
    [`${prefix}greeting is "Hello, <name>!"`]: (r) => greeting(r) === `Hello, ${name}!`,
  });
}

function why(res) {
  if (res.error) return res.error;
  return String(res.body || '').slice(0, 200);
}

// For setup(): every listener answers the gRPC health check (SERVING) and one SayHello, or the run
// stops at once naming the listener — instead of piling up connection errors for the whole run.
export function requireServing(listeners) {
  for (const [label, url] of Object.entries(listeners)) {
    const health = http.get(`${url}${HEALTH_PATH}`, { tags: { name: 'setup Health/Check' }, timeout: '5s' });
    let status;
    try {
      status = health.json('status');
    } catch (_) {
      status = undefined;
    }
    if (health.status !== 200 || status !== 'SERVING') {
      throw new Error(
        `storm-interceptors (${label}) not serving at ${url}${HEALTH_PATH}: status ${health.status} (${why(health)}). ` +
          'Start it (target/release/storm-interceptors, or scripts/stack.sh up), or point BASE_HOST / *_PORT / ' +
          'BASE_URL at it; PROTOCOL=https when it runs with INTERCEPTORS_TLS=self-signed.',
      );
    }
    const hello = sayHello(url, 'healthcheck', { name: 'setup SayHello' });
    if (hello.status !== 200 || greeting(hello) !== 'Hello, healthcheck!') {
      throw new Error(`SayHello on ${label} (${url}${SERVICE_PATH}) answered ${hello.status}: ${why(hello)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The single-target scenarios (basic-load, stress-test, spike-test): one SayHello per iteration
// on BASE_URL, recorded as the source records it — request_duration (Trend, ms), success_rate
// (Rate: every check passed), request_errors (Counter) — each sample tagged with its stage.


export const requestDuration = new Trend('request_duration', true);
export const successRate = new Rate('success_rate');
export const requestErrors = new Counter('request_errors');

let loggedFailures = 0;

// One call named `name`; returns the response. `tags` go on the custom metrics' samples.
export function callOnce(name, tags) {
  const res = sayHello(BASE_URL, name);
  const ok = checkGreeting(res, name);
  successRate.add(ok, tags);
  requestDuration.add(res.timings.duration, tags);
  if (!ok) {
    requestErrors.add(1, tags);
    // A few lines per VU, not one per failure: a broken run must not drown the log.
    if (loggedFailures < 3) {
      loggedFailures += 1;
      console.error(`VU ${__VU}: SayHello failed: status ${res.status} (${why(res)})`);
    }
  }
  return res;
}
