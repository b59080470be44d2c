# scripts/lib.sh — shared by scripts/run, scripts/test and bench/run: package
# installation, builds, and the embedded PostgreSQL cluster under var/.
# Sourced, not executed.

set -euo pipefail

CRMD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRMD_VAR=${CRMD_VAR:-$CRMD_ROOT/var}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[crmd] %s\n' "$*" >&2; }
die() { printf '[crmd] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@" || sudo "$@"; fi
}

# install_packages PKG...: installs whichever of the Debian packages are missing.
install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Settings for throwaway clusters (tests, benchmarks): durability is not the point.
CRMD_TEST_PG_SETTINGS=(fsync=off synchronous_commit=off full_page_writes=off)

CRMD_BUILD_PACKAGES=(build-essential cmake pkg-config libmicrohttpd-dev libpq-dev
    libjansson-dev libsodium-dev libgsl-dev check libcurl4-openssl-dev postgresql acl
    ca-certificates)

# build DIR CMAKE_ARGS...: configures (once) and builds into DIR.
build() {
    local dir=$1; shift
    log "building in ${dir#"$CRMD_ROOT"/}"
    cmake -S "$CRMD_ROOT" -B "$dir" "$@" >/dev/null
    cmake --build "$dir" -j "$(nproc)" >/dev/null
}

pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    printf '%s\n' "$d"
}

# PostgreSQL refuses to run as root: as root we run it as the system user crmd.
pg_os_user() {
    if [ "$(id -u)" -eq 0 ]; then printf 'crmd\n'; else id -un; fi
}

as_pg_user() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u crmd -- "$@"; else "$@"; fi
}

# service_user_prefix: sets AS_SERVICE_USER to the command prefix that runs
# a command as crmd when we are root (crmd itself never needs root), empty
# otherwise. setpriv execs the command in place: `"${AS_SERVICE_USER[@]}"
# crmd serve &` gives crmd's own pid in $!, so signals sent to it reach crmd
# (a shell function run with & would be a subshell in between).
service_user_prefix() {
    AS_SERVICE_USER=()
    if [ "$(id -u)" -eq 0 ]; then
        AS_SERVICE_USER=(setpriv --reuid=crmd --regid="$(id -g crmd)" --clear-groups --)
    fi
}

# as_service_user CMD...: runs CMD in the foreground as service_user_prefix says.
as_service_user() {
    service_user_prefix
    "${AS_SERVICE_USER[@]}" "$@"
}

ensure_pg_os_user() {
    [ "$(id -u)" -eq 0 ] || return 0
    id crmd >/dev/null 2>&1 ||
        useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin crmd
    # The cluster lives under the project; crmd needs to pass through its parents.
    local d=$1
    while [ "$d" != "/" ]; do
        if ! runuser -u crmd -- test -x "$d" 2>/dev/null; then
            setfacl -m u:crmd:x "$d"
        fi
        d=$(dirname "$d")
    done
}

# pg_paths NAME: sets PG_DATA, PG_SOCK and PG_LOG for the cluster var/NAME.
pg_paths() {
    local base=$CRMD_VAR/$1
    PG_DATA=$base/data
    PG_LOG=$base/postgresql.log
    PG_SOCK=$base/run
    # A unix socket path must fit in 107 bytes.
    if [ ${#PG_SOCK} -gt 80 ]; then
        PG_SOCK=/tmp/crmd-pg-$(printf '%s' "$base" | md5sum | cut -c1-12)
    fi
}

# pg_up NAME [postgres -c settings...]: creates the cluster on first use and
# starts it (unless it is already running). Only a unix socket, no TCP port.
pg_up() {
    local name=$1; shift
    pg_paths "$name"
    local bin
    bin=$(pg_bindir)
    mkdir -p "$CRMD_VAR/$name" "$PG_SOCK"
    ensure_pg_os_user "$CRMD_VAR/$name"
    if [ "$(id -u)" -eq 0 ]; then chown -R crmd: "$CRMD_VAR/$name" "$PG_SOCK"; fi
    chmod 700 "$PG_SOCK"
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        log "creating PostgreSQL cluster in ${PG_DATA#"$CRMD_ROOT"/}"
        as_pg_user "$bin/initdb" -D "$PG_DATA" -U crmd --auth=trust -E UTF8 --locale=C.UTF-8 \
            >"$CRMD_VAR/$name/initdb.log" 2>&1 || { cat "$CRMD_VAR/$name/initdb.log" >&2; die "initdb failed"; }
    fi
    if as_pg_user "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        log "PostgreSQL already running in ${PG_DATA#"$CRMD_ROOT"/}"
        return 0
    fi
    local opts="-c listen_addresses='' -c unix_socket_directories='$PG_SOCK'"
    opts+=" -c unix_socket_permissions=0700 -c max_connections=300"
    local s
    for s in "$@"; do opts+=" -c $s"; done
    # setsid: Ctrl-C in the terminal reaches crmd, not the database; our trap
    # stops the database after crmd has finished.
    as_pg_user setsid "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "$opts" start \
        >/dev/null || { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not start"; }
}

pg_down() {
    local name=$1
    pg_paths "$name"
    [ -f "$PG_DATA/PG_VERSION" ] || return 0
    as_pg_user "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

# pg_psql NAME DB ARGS...: psql on the embedded cluster as its superuser.
pg_psql() {
    local name=$1 db=$2; shift 2
    pg_paths "$name"
    as_pg_user "$(pg_bindir)/psql" -h "$PG_SOCK" -U crmd -d "$db" -v ON_ERROR_STOP=1 -qAt "$@"
}

pg_ensure_db() {
    local name=$1 db=$2
    if [ -z "$(pg_psql "$name" postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
        pg_psql "$name" postgres -c "CREATE DATABASE \"$db\""
    fi
}

# pg_url NAME DB: the connection string crmd uses for the embedded cluster.
pg_url() {
    pg_paths "$1"
    printf "host=%s port=5432 dbname=%s user=crmd\n" "$PG_SOCK" "$2"
}
