# shellcheck shell=bash
# PostgreSQL and Redis for scripts/stack. Sourced, not run.

PG_DIR=$STATE/postgres
PG_DATA=$PG_DIR/data
PG_SOCK=$PG_DIR/run
PG_LOG=$LOGS/postgres.log
REDIS_DIR=$STATE/redis
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$LOGS/redis.log

# ---- PostgreSQL ----------------------------------------------------------------

pg_bin_dir() {
    local dir
    dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    [[ -x $dir/postgres ]] && printf '%s\n' "$dir"
}

# PostgreSQL refuses to run as root; as root we run it as the Debian `postgres`
# user, otherwise as ourselves.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_running() {
    local bin
    bin=$(pg_bin_dir) || return 1
    [[ -f $PG_DATA/PG_VERSION ]] || return 1
    as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_healthy() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }

# The state dir usually sits under /root (mode 0700), which the postgres user
# cannot traverse. Grant only search (x) permission on the ancestors that lack
# it: that lets postgres reach its own directory without being able to list or
# read anything else. Say so, since it changes permissions outside the state dir.
pg_grant_traverse() {
    local target=$1 d path=''
    local IFS=/
    for d in $target; do
        [[ -z $d ]] && continue
        path+=/$d
        if ! runuser -u postgres -- test -x "$path" 2>/dev/null; then
            note "granting others search-only permission (chmod o+x) on $path so the postgres user can reach $PG_DIR"
            chmod o+x "$path"
        fi
    done
}

pg_write_conf() {
    # Loaded via `include` from postgresql.conf; rewritten on every start so a
    # changed setting here reaches existing data dirs.
    cat >"$PG_DATA/berth.conf" <<EOF
# Written by scripts/stack; edits are overwritten on the next start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 300
shared_buffers = 128MB
# Tests commit a lot; fsync stays on, only the wait for the WAL flush goes.
synchronous_commit = off
logging_collector = off
log_min_messages = warning
log_min_duration_statement = -1
# Per-query counts and timings for benchmarks (CREATE EXTENSION per database).
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
EOF
    if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$PG_DATA/berth.conf"; fi
    grep -q "^include_if_exists = 'berth.conf'" "$PG_DATA/postgresql.conf" ||
        printf "\ninclude_if_exists = 'berth.conf'\n" >>"$PG_DATA/postgresql.conf"
}

pg_up() {
    local bin t0=$EPOCHREALTIME
    step "PostgreSQL on 127.0.0.1:$PG_PORT"
    if ! bin=$(pg_bin_dir); then
        apt_install postgresql
        bin=$(pg_bin_dir) || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres found"
    fi
    command -v pg_isready >/dev/null || die "pg_isready not found (package postgresql-client)"

    mkdir -p "$PG_DIR" "$PG_SOCK" "$LOGS"
    if [[ $EUID -eq 0 ]]; then
        pg_grant_traverse "$(realpath "$PG_DIR")"
        chown postgres:postgres "$PG_DIR" "$PG_SOCK"
        # The log lives with the others in $LOGS but postgres must write it.
        touch "$PG_LOG" && chown postgres:postgres "$PG_LOG"
        chmod 0755 "$LOGS"
    fi

    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        note "initialising a new cluster in $PG_DATA"
        rm -rf "$PG_DATA"
        # Password auth over TCP (what the services use), trust on the private
        # socket so this script can administer without a password.
        as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
            die_with_log "$PG_DIR/initdb.log" "initdb failed"
    fi
    pg_write_conf

    if pg_running && pg_healthy; then
        ok "postgres already running"
    else
        require_port_free "$PG_PORT" postgres
        note "synchronous_commit=off for test speed (fsync stays on; a crash may lose the last few commits but never corrupts data)"
        # setsid: detach from our session like the other components.
        (
            close_lock_fds
            as_pg setsid "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start
        ) </dev/null >/dev/null 2>&1 || die_with_log "$PG_LOG" "postgres did not start"
        wait_until_pg_ready
    fi

    # Idempotent bootstrap: role, database, extension. Runs every `up` (~50 ms)
    # so a half-finished first run heals itself.
    # client_min_messages hides the "already exists, skipping" notices.
    local psql=(env PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres)
    as_pg "${psql[@]}" -d postgres >/dev/null <<'SQL' || die "creating role/database berth failed"
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'berth') THEN
    CREATE ROLE berth LOGIN SUPERUSER PASSWORD 'berth';
  END IF;
END $$;
SELECT 'CREATE DATABASE berth OWNER berth' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'berth') \gexec
SQL
    as_pg "${psql[@]}" -d berth -c 'CREATE EXTENSION IF NOT EXISTS btree_gist' >/dev/null ||
        die "CREATE EXTENSION btree_gist failed (is postgresql-contrib installed?)"
    ok "postgres ready: role/db berth, btree_gist ($(elapsed "$t0"))"
}

wait_until_pg_ready() {
    local start=$SECONDS
    until pg_healthy; do
        ((SECONDS - start < 60)) || die_with_log "$PG_LOG" "postgres not accepting connections after 60s"
        sleep 0.3
    done
}

pg_down() {
    local bin
    if pg_running; then
        bin=$(pg_bin_dir)
        # fast: roll back open transactions and stop; data is safe.
        as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
        ok "postgres stopped"
    fi
}

# ---- Redis ---------------------------------------------------------------------

redis_pid() {
    # redis-server rewrites its argv, so match the program name, not the path.
    local pid
    [[ -s $REDIS_PID ]] || return 1
    pid=$(<"$REDIS_PID")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    [[ $(<"/proc/$pid/comm") == redis-server ]] || return 1
    printf '%s\n' "$pid"
}

redis_healthy() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_up() {
    local t0=$EPOCHREALTIME start
    step "Redis on 127.0.0.1:$REDIS_PORT"
    command -v redis-server >/dev/null || apt_install redis-server
    command -v redis-cli >/dev/null || apt_install redis-tools
    mkdir -p "$REDIS_DIR" "$LOGS"
    # Cache only: no RDB snapshots, no AOF. Daemonized with a pid file.
    cat >"$REDIS_DIR/redis.conf" <<EOF
# Written by scripts/stack; edits are overwritten on the next start.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_PID
logfile $REDIS_LOG
dir $REDIS_DIR
save ""
appendonly no
EOF
    if redis_pid >/dev/null && redis_healthy; then
        ok "redis already running"
        return 0
    fi
    require_port_free "$REDIS_PORT" redis
    (
        close_lock_fds
        exec setsid redis-server "$REDIS_DIR/redis.conf"
    ) </dev/null >/dev/null 2>&1 || die_with_log "$REDIS_LOG" "redis-server failed to start"
    start=$SECONDS
    until redis_healthy; do
        ((SECONDS - start < 30)) || die_with_log "$REDIS_LOG" "redis not answering PING after 30s"
        sleep 0.2
    done
    ok "redis ready ($(elapsed "$t0"))"
}

redis_down() {
    local pid
    if pid=$(redis_pid); then
        # nosave: there is nothing to persist and it keeps shutdown instant.
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        stop_pid "$pid" 10
        ok "redis stopped"
    fi
    rm -f "$REDIS_PID"
}
