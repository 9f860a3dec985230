#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the tests marked `postgres`.
#
#   source .ci/postgres.sh     # exports RUNTREE_TEST_PG_DSN (and stops the server on exit)
#   bash .ci/postgres.sh       # starts it and prints the DSN (stop: pg_ctl -D <dir> stop)
#
# Installs Debian's postgresql package when it is missing and we are root. When no server
# can be had, it says so and the postgres tests are skipped — except under CI (CI=true),
# where tests/conftest.py turns a skipped postgres test into a failure.

_rt_pg_main() {
    local bin initdb
    initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$initdb" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "postgres.sh: installing postgresql (apt-get)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
            >/dev/null 2>&1 || true
        initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    if [ -z "$initdb" ]; then
        echo "postgres.sh: no PostgreSQL found; postgres tests will be skipped" >&2
        return 0
    fi
    bin=$(dirname "$initdb")
    local dir port run=()
    dir=$(mktemp -d /tmp/runtree-pg.XXXXXX)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ "$(id -u)" = 0 ]; then
        # The server refuses to run as root: run it as the postgres user.
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$dir"
        run=(runuser -u postgres --)
    fi
    if ! "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1; then
        echo "postgres.sh: initdb failed (see $dir/initdb.log); postgres tests will be skipped" >&2
        return 0
    fi
    if ! "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" \
        start >/dev/null; then
        echo "postgres.sh: the server did not start (see $dir/server.log)" >&2
        return 0
    fi
    export RUNTREE_TEST_PG_DSN="postgresql://postgres@127.0.0.1:$port/postgres"
    _RT_PG_STOP=("${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop)
    echo "postgres.sh: PostgreSQL on 127.0.0.1:$port (data in $dir)" >&2
    echo "$RUNTREE_TEST_PG_DSN"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: export the DSN into the caller and stop the server when it exits.
    _rt_pg_main >/dev/null
    if [ -n "${_RT_PG_STOP+x}" ]; then
        trap '"${_RT_PG_STOP[@]}" >/dev/null 2>&1 || true' EXIT
    fi
else
    set -euo pipefail
    _rt_pg_main
fi
