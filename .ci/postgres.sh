# A throwaway PostgreSQL for the test suite: sourced by .ci/run (or by hand:
# `source .ci/postgres.sh` before the README's test command). Installs the server from
# Debian's packages if it is missing, runs initdb as a non-root user in a temp folder,
# starts it on a loopback port, exports TERTULIA_TEST_POSTGRES_URL, and stops and removes
# it when the shell that sourced it exits.

_pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

if [ -z "$(_pg_bin)" ]; then
    echo "postgres: installing the server from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN="$(_pg_bin)"
PG_DIR="$(mktemp -d /tmp/tertulia-pg.XXXXXX)"
PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PG_USER="$(id -un)"
if [ "$(id -u)" = "0" ]; then
    # initdb refuses to run as root: the cluster belongs to an unprivileged user.
    PG_USER=postgres
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown "$PG_USER" "$PG_DIR"
fi
_as_pg() { if [ "$(id -u)" = "0" ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }

_as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U tertulia --no-sync -E UTF8 >/dev/null
# fsync off: a test cluster may lose data on power loss, never on a process crash.
_as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 start \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null
export TERTULIA_TEST_POSTGRES_URL="postgresql+psycopg://tertulia@127.0.0.1:$PG_PORT/postgres"
echo "postgres: running on 127.0.0.1:$PG_PORT ($PG_DIR)"

_pg_stop() {
    _as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap _pg_stop EXIT
