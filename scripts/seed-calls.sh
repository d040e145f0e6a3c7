#!/usr/bin/env bash
# seed-calls.sh N — loads N realistic calls (with their event history and the hourly rollup the
# reporting endpoints read) into the messages service's database, set-based in one transaction,
# for the reporting benchmark. Calls are spread over TENANTS tenants and the last DAYS days.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/seed-calls.sh N

Loads N calls (1..50,000,000) straight into Postgres: ~60 % COMPLETED (answered, 30–600 s of talk),
15 % FAILED after ANSWERED, 15 % FAILED while RINGING, 5 % still RINGING, 5 % just INITIATED.
Tenants are 00000000-0000-0000-0000-00000000000k (k = 0..TENANTS-1); tenant 0 is the S2 source's
default TENANT_ID, so its k6 commands work as written. Run it after the messages service has
started once (it applies the migrations). Each run adds new calls (ids seed-<run>-<n>).

Env:
  DATABASE_URL  default postgres://postgres@127.0.0.1:5432/stormstack
  TENANTS       default 10
  DAYS          default 30 (calls initiated uniformly over the last DAYS days)
USAGE
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") usage >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=$1
TENANTS=${TENANTS:-10}
DAYS=${DAYS:-30}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/stormstack}
# check_count NAME VALUE MAX — a positive integer up to MAX, or one line and exit 2.
check_count() {
  if ! [[ $2 =~ ^[1-9][0-9]{0,8}$ ]] || (($2 > $3)); then
    echo "seed-calls.sh: $1 must be 1..$3, got '$2'" >&2
    exit 2
  fi
}
check_count N "$N" 50000000
check_count TENANTS "$TENANTS" 4096
check_count DAYS "$DAYS" 3650
command -v psql >/dev/null || die "psql not found (apt-get install postgresql-client)"

has_table=$(psql "$DATABASE_URL" -qAtc "SELECT to_regclass('public.calls') IS NOT NULL" 2>&1) ||
  die "cannot reach $DATABASE_URL: $has_table"
[[ $has_table == t ]] || die "no calls table in $DATABASE_URL: start the messages service once (scripts/stack.sh up) so it applies the migrations"

run="seed-$(date +%s)-"
log "seeding $N calls over $TENANTS tenants and $DAYS days into $DATABASE_URL"
started=$SECONDS
psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -v n="$N" -v tenants="$TENANTS" -v days="$DAYS" -v run="$run" <<'SQL'
BEGIN;
CREATE TEMP TABLE seed ON COMMIT DROP AS
SELECT tenant_id, call_id, from_number, to_number, initiated_at,
       CASE WHEN r < 0.60 THEN 'COMPLETED' WHEN r < 0.90 THEN 'FAILED'
            WHEN r < 0.95 THEN 'RINGING' ELSE 'INITIATED' END AS state,
       CASE WHEN r < 0.95 THEN initiated_at + ring END AS ringing_at,
       CASE WHEN r < 0.75 THEN initiated_at + ring + answer END AS answered_at,
       CASE WHEN r < 0.75 THEN initiated_at + ring + answer + talk
            WHEN r < 0.90 THEN initiated_at + ring + interval '20 seconds' END AS ended_at
FROM (
  SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(g % :tenants), 12, '0'))::uuid AS tenant_id,
         :'run' || g AS call_id,
         '+1555' || lpad((random() * 9999999)::int::text, 7, '0') AS from_number,
         '+1666' || lpad((random() * 9999999)::int::text, 7, '0') AS to_number,
         now() - random() * (:days * interval '1 day') AS initiated_at,
         random() AS r,
         (2 + random() * 10) * interval '1 second' AS ring,
         (3 + random() * 20) * interval '1 second' AS answer,
         (30 + random() * 570) * interval '1 second' AS talk
  FROM generate_series(1, :n) AS g
) AS s;

INSERT INTO calls (tenant_id, call_id, state, from_number, to_number, initiated_at, answered_at, ended_at, updated_at)
SELECT tenant_id, call_id, state, from_number, to_number, initiated_at, answered_at, ended_at,
       coalesce(ended_at, answered_at, ringing_at, initiated_at)
FROM seed;

INSERT INTO call_events (tenant_id, call_id, state, previous_state, at)
SELECT tenant_id, call_id, 'INITIATED', NULL, initiated_at FROM seed
UNION ALL SELECT tenant_id, call_id, 'RINGING', 'INITIATED', ringing_at FROM seed WHERE ringing_at IS NOT NULL
UNION ALL SELECT tenant_id, call_id, 'ANSWERED', 'RINGING', answered_at FROM seed WHERE answered_at IS NOT NULL
UNION ALL SELECT tenant_id, call_id, state, CASE WHEN answered_at IS NULL THEN 'RINGING' ELSE 'ANSWERED' END, ended_at
          FROM seed WHERE ended_at IS NOT NULL;

INSERT INTO call_stats_hourly AS h
  (tenant_id, bucket_start, shard, initiated, answered, completed, failed, talk_seconds, talked)
SELECT tenant_id, date_trunc('hour', initiated_at, 'UTC'), (abs(hashtext(call_id)) % 8)::smallint,
       count(*), count(answered_at), count(*) FILTER (WHERE state = 'COMPLETED'),
       count(*) FILTER (WHERE state = 'FAILED'),
       coalesce(sum(extract(epoch FROM ended_at - answered_at)) FILTER (WHERE state = 'COMPLETED'), 0),
       count(*) FILTER (WHERE state = 'COMPLETED')
FROM seed GROUP BY 1, 2, 3
ON CONFLICT (tenant_id, bucket_start, shard) DO UPDATE SET
  initiated = h.initiated + EXCLUDED.initiated, answered = h.answered + EXCLUDED.answered,
  completed = h.completed + EXCLUDED.completed, failed = h.failed + EXCLUDED.failed,
  talk_seconds = h.talk_seconds + EXCLUDED.talk_seconds, talked = h.talked + EXCLUDED.talked;
COMMIT;
ANALYZE calls;
ANALYZE call_stats_hourly;
SQL
total=$(psql "$DATABASE_URL" -qAtc "SELECT count(*) FROM calls")
log "seeded $N calls in $((SECONDS - started)) s; the database now holds $total calls"
