#!/usr/bin/env bash
# tests/shell/test_run.sh CRMD_BINARY — scripts/run and scripts/crmd as a
# user drives them, on a throwaway var directory and a free port:
#   1. `scripts/run 2>&1 | tee log` serves, with crmd running as the user
#      crmd when started as root (as PostgreSQL does);
#   2. scripts/crmd creates a working admin key while scripts/run runs;
#   3. Ctrl-C (SIGINT to the whole foreground group, tee included) stops
#      crmd and the embedded PostgreSQL: the cleanup survives the broken pipe;
#   4. scripts/crmd creates a key when nothing runs, and stops the cluster
#      it started for that;
#   5. SIGTERM to scripts/run alone (a service manager's stop) stops crmd,
#      then PostgreSQL.
# Prints one line per check; exits non-zero when any fails.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
tmp=$(mktemp -d /tmp/crmd-run-test.XXXXXX)
chmod 755 "$tmp"
export CRMD_VAR=$tmp CRMD_BIN=$BIN CRMD_LISTEN=127.0.0.1:0
unset CRMD_DATABASE_URL
failed=0
sessions=()
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failed=1; }

pg_running() {
    (source "$ROOT/scripts/lib.sh" && pg_paths pg &&
        as_pg_user "$(pg_bindir)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1)
}
cleanup() {
    # Whatever is left of a session this test started (only after a failure).
    for s in "${sessions[@]}"; do pkill -KILL -s "$s" 2>/dev/null; done
    (source "$ROOT/scripts/lib.sh" && pg_down pg) >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

# 1. Start as a terminal would: in a session of its own whose group gets the
# Ctrl-C, with SIGINT and SIGPIPE at their defaults (a background job of a
# script inherits SIGINT ignored, which would hide the bug).
env --default-signal=INT,TERM,PIPE setsid bash -c '"$0"/scripts/run 2>&1 | tee "$1"/log >/dev/null' "$ROOT" "$tmp" </dev/null &
sid=$!
sessions+=("$sid")
port=
for _ in $(seq 1 600); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$tmp/log" 2>/dev/null | head -n 1)
    [ -n "$port" ] && break
    sleep 0.1
done
if [ -z "$port" ]; then
    fail "scripts/run did not start serving within 60 s"; tail -n 20 "$tmp/log"; exit 1
fi
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")
[ "$code" = 200 ] && ok "scripts/run serves (/readyz $code)" || fail "/readyz answered $code"

want_user=$([ "$(id -u)" -eq 0 ] && echo crmd || id -un)
user=$(ps -o user=,args= -s "$sid" | awk -v bin="$BIN" '$2 == bin && $3 == "serve" {print $1}')
[ "$user" = "$want_user" ] && ok "crmd serves as $user" || fail "crmd serves as '$user', not $want_user"

# 2. A new admin key while scripts/run runs.
secret=$("$ROOT/scripts/crmd" keys create --name test-while-running --scopes admin 2>/dev/null | head -n 1)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $secret" \
    "http://127.0.0.1:$port/v1/api-keys")
[ -n "$secret" ] && [ "$code" = 200 ] && ok "scripts/crmd keys create works while scripts/run runs" ||
    fail "key made while running: GET /v1/api-keys answered $code"

# 3. Ctrl-C: SIGINT to the whole group, tee included.
kill -INT -- "-$sid"
for _ in $(seq 1 600); do
    [ -z "$(ps -o pid= -s "$sid")" ] && break
    sleep 0.1
done
if [ -n "$(ps -o pid= -s "$sid")" ]; then
    fail "scripts/run still running 60 s after Ctrl-C"
elif pg_running; then
    fail "Ctrl-C under | tee left PostgreSQL running"
else
    ok "Ctrl-C under | tee stops crmd and PostgreSQL"
fi

# 4. A key when nothing runs: the cluster is started for it and stopped again.
secret=$("$ROOT/scripts/crmd" keys create --name test-stopped --scopes admin 2>/dev/null | head -n 1)
[ -n "$secret" ] && ok "scripts/crmd keys create works when nothing runs" ||
    fail "scripts/crmd keys create printed no secret when nothing runs"
pg_running && fail "scripts/crmd left the cluster running" || ok "scripts/crmd stopped the cluster it started"

# 5. SIGTERM to the script alone, as a service manager sends it.
env --default-signal=INT,TERM,PIPE setsid "$ROOT/scripts/run" >"$tmp/log2" 2>&1 </dev/null &
sid=$!
sessions+=("$sid")
for _ in $(seq 1 600); do
    grep -q 'listening on' "$tmp/log2" 2>/dev/null && break
    sleep 0.1
done
kill -TERM "$sid"
for _ in $(seq 1 600); do
    [ -z "$(ps -o pid= -s "$sid")" ] && break
    sleep 0.1
done
if [ -n "$(ps -o pid= -s "$sid")" ]; then
    fail "SIGTERM to scripts/run left $(ps -o args= -s "$sid" | head -n 1) running"
elif pg_running; then
    fail "SIGTERM to scripts/run left PostgreSQL running"
else
    ok "SIGTERM to scripts/run stops crmd and PostgreSQL"
fi

exit "$failed"
