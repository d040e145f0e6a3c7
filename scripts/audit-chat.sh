#!/usr/bin/env bash
# audit-chat.sh — after a chat perf run: did every 202 become exactly one row? Compares the
# accepted list `storm-loadgen chat --accepted FILE` wrote with chat_messages in Postgres, for the
# applications in the list, in one psql session (the list goes in with \copy: 150,000 lines take
# well under a second).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/audit-chat.sh ACCEPTED_FILE [--database-url URL] [--examples N]

ACCEPTED_FILE has one `<app_token> <chat_number> <message_number>` line per write answered 202
(`storm-loadgen chat --accepted FILE`); ACCEPTED_FILE.refused, when present, one
`<app_token> <chat_number> <status|timeout|reset|connect|transport>` line per write that was not.
Run it once the queue is drained (scripts/run-performance-test.sh waits for that first).

Prints `lost: N  duplicated: N  gaps: N`, then the first examples of each:
  lost        a 202 with no row in chat_messages
  duplicated  a (chat, number) answered 202 twice, or with more rows than 202s
  gaps        numbers missing from 1..max(number) of a chat's rows, for the chats of the list's
              applications. A number is allocated before the broker publish, so a write refused
              after that (503) or cut off by a client timeout leaves one: gaps up to the refused
              writes of the same chat are explained, the rest are reported as unexplained.
Also: rows with no 202 in the list (a write the client gave up on but the service accepted), and
whether chats.messages_count agrees with the rows (eventually consistent: about a second).

Exit 0 when nothing is lost or duplicated, 1 when something is (or the audit cannot run), 2 on
bad arguments.

  --database-url URL   default $DATABASE_URL, else postgres://postgres@localhost:5432/stormstack
  --examples N         examples shown per kind (default 5)
USAGE
}

usage_error() {
  echo "audit-chat.sh: $1 (see --help)" >&2
  exit 2
}

ACCEPTED=""
DB_URL=${DATABASE_URL:-postgres://postgres@localhost:5432/stormstack}
EXAMPLES=5
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --database-url) (($# >= 2)) || usage_error "--database-url needs a value"; DB_URL=$2; shift 2 ;;
    --database-url=*) DB_URL=${1#*=}; shift ;;
    --examples) (($# >= 2)) || usage_error "--examples needs a value"; EXAMPLES=$2; shift 2 ;;
    --examples=*) EXAMPLES=${1#*=}; shift ;;
    -*) usage_error "unknown option '$1'" ;;
    *)
      [[ -z $ACCEPTED ]] || usage_error "unexpected argument '$1'"
      ACCEPTED=$1
      shift
      ;;
  esac
done
[[ -n $ACCEPTED ]] || usage_error "give the accepted file (storm-loadgen chat --accepted FILE)"
[[ -f $ACCEPTED && -r $ACCEPTED ]] || usage_error "cannot read '$ACCEPTED'"
[[ $EXAMPLES =~ ^[0-9]+$ ]] || usage_error "--examples must be a number, got '$EXAMPLES'"
[[ $DB_URL =~ ^postgres(ql)?:// ]] || usage_error "--database-url must be postgres://…, got '$DB_URL'"

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v psql >/dev/null || die "psql not found (Debian package: postgresql-client)"

REFUSED="$ACCEPTED.refused"
[[ -f $REFUSED ]] || REFUSED=/dev/null
# A path inside a psql \copy is a quoted literal: double any single quote.
sql_path() { printf "'%s'" "${1//\'/\'\'}"; }

started=$SECONDS
# Every result line is `kind|…` so the output below can be built from it.
out=$(psql "$DB_URL" -X -q -A -t -F '|' -v ON_ERROR_STOP=1 -v examples="$EXAMPLES" 2>&1 <<SQL
CREATE TEMP TABLE acc_raw (app text, chat integer, number bigint);
\\copy acc_raw FROM $(sql_path "$ACCEPTED") WITH (FORMAT text, DELIMITER ' ')
CREATE TEMP TABLE ref_raw (app text, chat integer, what text);
\\copy ref_raw FROM $(sql_path "$REFUSED") WITH (FORMAT text, DELIMITER ' ')

-- The chats of every application the lists name (the run's own applications).
CREATE TEMP TABLE involved AS
  SELECT c.id AS chat_id, a.token AS app, c.number AS chat, c.messages_count
  FROM applications a JOIN chats c ON c.application_id = a.id
  WHERE a.token IN (SELECT app FROM acc_raw UNION SELECT app FROM ref_raw);
CREATE TEMP TABLE acc AS
  SELECT r.app, r.chat, r.number, count(*) AS answers, i.chat_id
  FROM acc_raw r LEFT JOIN involved i ON i.app = r.app AND i.chat = r.chat
  GROUP BY r.app, r.chat, r.number, i.chat_id;
CREATE TEMP TABLE msg AS
  SELECT m.chat_id, m.number, count(*) AS n
  FROM chat_messages m JOIN involved i ON i.chat_id = m.chat_id
  GROUP BY m.chat_id, m.number;
CREATE INDEX ON msg (chat_id, number);
ANALYZE acc; ANALYZE msg;

CREATE TEMP TABLE lost AS
  SELECT a.app, a.chat, a.number, a.chat_id FROM acc a
  WHERE a.chat_id IS NULL
     OR NOT EXISTS (SELECT 1 FROM msg m WHERE m.chat_id = a.chat_id AND m.number = a.number);
CREATE TEMP TABLE dup AS
  SELECT a.app, a.chat, a.number, a.answers, coalesce(m.n, 0) AS rows_
  FROM acc a LEFT JOIN msg m ON m.chat_id = a.chat_id AND m.number = a.number
  WHERE a.answers > 1 OR coalesce(m.n, 0) > a.answers
  UNION ALL
  SELECT i.app, i.chat, m.number, 0, m.n FROM msg m JOIN involved i USING (chat_id)
  WHERE m.n > 1 AND NOT EXISTS (SELECT 1 FROM acc a WHERE a.chat_id = m.chat_id AND a.number = m.number);
CREATE TEMP TABLE gaps AS
  SELECT i.chat_id, i.app, i.chat, g.number
  FROM (SELECT chat_id, max(number) AS top FROM msg GROUP BY chat_id) x
  JOIN involved i USING (chat_id)
  CROSS JOIN LATERAL generate_series(1, x.top) AS g(number)
  WHERE NOT EXISTS (SELECT 1 FROM msg m WHERE m.chat_id = x.chat_id AND m.number = g.number);
-- Gaps a refused write of the same chat can explain (each refused write explains one).
CREATE TEMP TABLE per_chat AS
  SELECT g.chat_id, g.app, g.chat, g.gaps, coalesce(r.refused, 0) AS refused
  FROM (SELECT chat_id, app, chat, count(*) AS gaps FROM gaps GROUP BY 1, 2, 3) g
  LEFT JOIN (SELECT app, chat, count(*) AS refused FROM ref_raw GROUP BY 1, 2) r
    ON r.app = g.app AND r.chat = g.chat;
CREATE TEMP TABLE unacked AS
  SELECT i.app, i.chat, m.number FROM msg m JOIN involved i USING (chat_id)
  WHERE NOT EXISTS (SELECT 1 FROM acc a WHERE a.chat_id = m.chat_id AND a.number = m.number);

SELECT 'counts',
  (SELECT count(*) FROM acc_raw),
  (SELECT count(*) FROM ref_raw),
  (SELECT count(DISTINCT app) FROM involved),
  (SELECT count(*) FROM involved),
  (SELECT coalesce(sum(n), 0) FROM msg),
  (SELECT count(*) FROM lost),
  (SELECT count(*) FROM dup),
  (SELECT count(*) FROM gaps),
  (SELECT coalesce(sum(least(gaps, refused)), 0) FROM per_chat),
  (SELECT count(*) FROM unacked),
  (SELECT count(*) FROM involved i
     WHERE i.messages_count <> coalesce((SELECT sum(n) FROM msg m WHERE m.chat_id = i.chat_id), 0)),
  (SELECT count(*) FROM acc WHERE chat_id IS NULL);
SELECT 'lost', app, chat, number, CASE WHEN chat_id IS NULL THEN 'unknown chat' ELSE 'no row' END
  FROM lost ORDER BY app, chat, number LIMIT :examples;
SELECT 'dup', app, chat, number, answers || ' × 202, ' || rows_ || ' rows'
  FROM dup ORDER BY app, chat, number LIMIT :examples;
SELECT 'gap', g.app, g.chat, g.number, p.gaps || ' gaps, ' || p.refused || ' refused writes in this chat'
  FROM gaps g JOIN per_chat p USING (chat_id) ORDER BY p.gaps <= p.refused, g.app, g.chat, g.number LIMIT :examples;
SELECT 'unacked', app, chat, number, '' FROM unacked ORDER BY app, chat, number LIMIT :examples;
SQL
) || die "the audit query failed: ${out:-no output} (is DATABASE_URL the chat service's database?)"

IFS='|' read -r _ accepted refused apps chats rows lost dup gaps explained unacked count_off unknown <<<"$(grep '^counts|' <<<"$out")"
[[ -n ${unknown:-} ]] || die "the audit query gave no counts: $out"
examples() {
  local kind=$1 label=$2
  { grep "^$kind|" <<<"$out" || true; } | while IFS='|' read -r _ app chat number why; do
    printf '  %s app %s chat %s number %s%s\n' "$label" "$app" "$chat" "$number" "${why:+ ($why)}"
  done
}

echo "audit: $accepted accepted writes ($refused refused) in $chats chats of $apps applications; $rows rows in those chats ($((SECONDS - started))s)"
echo "lost: $lost  duplicated: $dup  gaps: $gaps"
examples lost "lost:"
examples dup "duplicated:"
if ((gaps > 0)); then
  echo "  gaps explained by refused writes of the same chat: $explained of $gaps"
  examples gap "gap:"
fi
if ((unacked > 0)); then
  echo "  rows without a 202 in the list: $unacked (writes the client gave up on that the service accepted)"
  examples unacked "no 202:"
fi
if ((unknown > 0)); then
  echo "  $unknown accepted lines name a chat that is not in the database (wrong DATABASE_URL?)"
fi
if ((count_off > 0)); then
  echo "  chats.messages_count differs from the rows in $count_off of $chats chats (eventually consistent: run again in a second)"
else
  echo "  chats.messages_count agrees with the rows in all $chats chats"
fi
((lost == 0 && dup == 0))
