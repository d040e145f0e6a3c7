#!/usr/bin/env bash
# gen-jwt.sh — mint a development HS256 JWT offline (openssl only, no network, no services).
# The secret is $JWT_SECRET, or the development secret `dev-secret` that stack.sh and the S0
# source's own token script use, so tokens from either interoperate. The services accept dev-secret
# only with STORM_DEV=1 (stack.sh, test.sh, docker-compose.yml and the k8s dev overlay set it).
# The token carries no `aud`: the gateway and messages accept it (the S0 drop-in shape), chat does not.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/gen-jwt.sh SUB [--tenant UUID] [--ttl SECS]

Print an HS256 JWT {sub, iat, exp[, tenant]} signed with $JWT_SECRET (default: dev-secret).

  SUB            the token's subject (user id), e.g. user-1
  --tenant UUID  add a `tenant` claim (needed by tenant-scoped endpoints: calls, reporting)
  --ttl SECS     lifetime in seconds, a positive integer (default 3600)
  -h, --help     show this help

Example:
  ACCESS_TOKEN=$(bash scripts/gen-jwt.sh user-1) bash scripts/perf-load.sh
USAGE
}

usage_error() {
  printf 'gen-jwt.sh: %s (see --help)\n' "$1" >&2
  exit 2
}

sub=""
tenant=""
ttl=3600
while (($# > 0)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --tenant) (($# >= 2)) || usage_error "--tenant needs a value"; tenant=$2; shift 2 ;;
    --tenant=*) tenant=${1#*=}; shift ;;
    --ttl) (($# >= 2)) || usage_error "--ttl needs a value"; ttl=$2; shift 2 ;;
    --ttl=*) ttl=${1#*=}; shift ;;
    --)
      shift
      (($# <= 1)) || usage_error "more than one SUB given after --"
      [[ $# -eq 0 || -z $sub ]] || usage_error "more than one SUB given ('$sub' and '$1')"
      sub=${1:-$sub}
      break
      ;;
    -*) usage_error "unknown option '$1'" ;;
    *) [[ -z $sub ]] || usage_error "more than one SUB given ('$sub' and '$1')"; sub=$1; shift ;;
  esac
done

[[ -n $sub ]] || usage_error "missing SUB (the token's subject, e.g. user-1)"
if [[ $sub =~ [[:cntrl:]] ]]; then
  usage_error "SUB must not contain control characters"
fi
uuid_re='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
if [[ -n $tenant && ! $tenant =~ $uuid_re ]]; then
  usage_error "--tenant must be a UUID like 3f2c7a9e-1b2d-4c5e-8f90-123456789abc, got '$tenant'"
fi
# At most 9 digits keeps now+ttl far from any integer overflow (about 31 years).
if [[ ! $ttl =~ ^[1-9][0-9]{0,8}$ ]]; then
  usage_error "--ttl must be a positive integer number of seconds (at most 999999999), got '$ttl'"
fi
command -v openssl >/dev/null || { echo "gen-jwt.sh: openssl not found on PATH (apt-get install openssl)" >&2; exit 1; }

# base64url without padding (RFC 7515 §2).
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# JSON string escaping for the only two characters that need it once control characters are out.
json_sub=${sub//\\/\\\\}
json_sub=${json_sub//\"/\\\"}

now=$(date +%s)
exp=$((now + ttl))
payload=$(printf '{"sub":"%s","iat":%d,"exp":%d' "$json_sub" "$now" "$exp")
[[ -z $tenant ]] || payload+=$(printf ',"tenant":"%s"' "$tenant")
payload+='}'

header_b64=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
payload_b64=$(printf '%s' "$payload" | b64url)
signing_input="$header_b64.$payload_b64"
secret=${JWT_SECRET:-dev-secret}
signature_b64=$(printf '%s' "$signing_input" | openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)

printf '%s.%s\n' "$signing_input" "$signature_b64"
