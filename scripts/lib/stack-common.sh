# shellcheck shell=bash disable=SC2034 # settings are used by the files that source this
# Shared settings and process helpers for scripts/stack. Sourced, not run.

# ---- settings -----------------------------------------------------------------
# Everything mutable lives outside the clone so `git clean` never eats a database
# and several clones can share one stack.
STATE=${BERTH_STACK_DIR:-$HOME/.cache/berth/stack}
CACHE_ROOT=${BERTH_CACHE_DIR:-$HOME/.cache/berth}

K8S_VERSION=v1.35.4
KWOK_VERSION=v0.8.0
# The cache key carries both versions so bumping either builds a fresh set.
BIN_ROOT=$CACHE_ROOT/k8s-$K8S_VERSION-kwok-$KWOK_VERSION
BIN=$BIN_ROOT/bin

# Fixed, non-default loopback ports so the stack never collides with a system
# PostgreSQL/Redis/Kubernetes on their usual ports.
PG_PORT=55432
REDIS_PORT=56379
ETCD_PORT=52379
ETCD_PEER_PORT=52380
APISERVER_PORT=56443
KCM_PORT=50257
SCHEDULER_PORT=50259
KWOK_PORT=50247

SERVICE_CIDR=10.96.0.0/16
NODE_NAME=kwok-node-0

PKI=$STATE/pki
RUN=$STATE/run
LOGS=$STATE/logs
KUBECONFIG_FILE=$STATE/kubeconfig

# ---- output -----------------------------------------------------------------------
# Progress goes to stderr so `scripts/stack env` output stays eval-able.
if [[ -t 2 ]]; then
    C_BOLD=$'\e[1m' C_GREEN=$'\e[32m' C_RED=$'\e[31m' C_YELLOW=$'\e[33m' C_OFF=$'\e[0m'
else
    C_BOLD='' C_GREEN='' C_RED='' C_YELLOW='' C_OFF=''
fi
step() { printf '%s==>%s %s\n' "$C_BOLD" "$C_OFF" "$*" >&2; }
ok() { printf '    %sok%s %s\n' "$C_GREEN" "$C_OFF" "$*" >&2; }
note() { printf '    %snote%s %s\n' "$C_YELLOW" "$C_OFF" "$*" >&2; }
die() {
    printf '%serror:%s %s\n' "$C_RED" "$C_OFF" "$*" >&2
    exit 1
}

# Print the end of a log file and fail; used whenever a component does not come up.
die_with_log() {
    local log=$1
    shift
    printf '%serror:%s %s\n' "$C_RED" "$C_OFF" "$*" >&2
    if [[ -f $log ]]; then
        printf -- '---- last 40 lines of %s ----\n' "$log" >&2
        tail -n 40 "$log" >&2
        printf -- '----\n' >&2
    fi
    exit 1
}

# Seconds since $1 (an EPOCHREALTIME value), one decimal.
elapsed() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", e - s }'; }

# ---- ports ------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port already taken by something that is not ours would make the component
# crash-loop with a bind error; say so up front instead.
require_port_free() {
    local port=$1 what=$2
    if port_open "$port"; then
        die "port $port is already in use, but not by this stack's $what (state dir $STATE). Stop whatever listens there (ss -ltnp 'sport = :$port') or run 'scripts/stack down' with the BERTH_STACK_DIR that started it."
    fi
}

# ---- processes ----------------------------------------------------------------------
# Each long-running component <name> is the binary $BIN/<name>, with its pid in
# $RUN/<name>.pid and its output in $LOGS/<name>.log.

# Prints the pid if <name> is running. Pid files survive reboots and pids get
# reused, so the pid only counts if that process is still our binary.
proc_pid() {
    local name=$1 exe=${2:-$BIN/$1} pf pid
    pf=$RUN/$name.pid
    [[ -s $pf ]] || return 1
    pid=$(<"$pf")
    [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
    [[ $(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1) == "$exe" ]] || return 1
    printf '%s\n' "$pid"
}

# Daemons inherit open file descriptors. One holding the flock of the stack or
# of the build cache would block every later `scripts/stack` call, so children
# close them first (call in a subshell only).
close_lock_fds() {
    if [[ -n ${STACK_LOCK:-} ]]; then exec {STACK_LOCK}>&-; fi
    if [[ -n ${BUILD_LOCK:-} ]]; then exec {BUILD_LOCK}>&-; fi
}

pid_alive() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# Start <name> detached: its own session (setsid) so it outlives this script and
# is not killed with the caller's process group, stdin closed, output appended
# to its log. The previous run's log is kept as <name>.log.1.
start_proc() {
    local name=$1 log
    shift
    mkdir -p "$RUN" "$LOGS"
    log=$LOGS/$name.log
    [[ -f $log ]] && mv -f "$log" "$log.1"
    printf '=== %s: %s %s\n' "$(date -Is)" "$BIN/$name" "$*" >"$log"
    # No job control in this script, so the child is not a process-group leader
    # and setsid execs in place: $! is the component's own pid.
    (
        close_lock_fds
        cd "$STATE" || exit 1 # not the clone: a daemon should not pin a checkout
        exec setsid "$BIN/$name" "$@"
    ) </dev/null >>"$log" 2>&1 &
    printf '%s\n' "$!" >"$RUN/$name.pid"
}

# SIGTERM, wait up to $2 seconds (default 20), then SIGKILL.
stop_pid() {
    local pid=$1 grace=${2:-20} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    note "pid $pid ignored SIGTERM for ${grace}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

stop_proc() {
    local name=$1 pid
    if pid=$(proc_pid "$name"); then
        stop_pid "$pid"
        ok "$name stopped"
    fi
    rm -f "$RUN/$name.pid"
}

# wait_healthy <name> <log> <timeout-seconds> <check command...>
# Polls the check; fails early with the log tail if the process dies meanwhile.
wait_healthy() {
    local name=$1 log=$2 timeout=$3 start=$SECONDS next_note=15
    shift 3
    local pid
    pid=$(<"$RUN/$name.pid")
    until "$@" >/dev/null 2>&1; do
        # Liveness by pid, not proc_pid: right after start the child may not
        # have exec'd the binary yet, so its command line is still bash's.
        if ! pid_alive "$pid"; then
            die_with_log "$log" "$name exited while starting"
        fi
        if ((SECONDS - start >= timeout)); then
            die_with_log "$log" "$name not healthy after ${timeout}s"
        fi
        if ((SECONDS - start >= next_note)); then
            note "still waiting for $name ($((SECONDS - start))s)"
            next_note=$((next_note + 15))
        fi
        sleep 0.3
    done
}

# ensure_proc <name> <port> <timeout> <health-fn> -- <args...>
# Idempotent start: a running, healthy component is left alone; a running but
# unhealthy one gets the timeout to recover (it may still be starting).
ensure_proc() {
    local name=$1 port=$2 timeout=$3 health=$4 t0=$EPOCHREALTIME
    shift 4
    [[ ${1:-} == -- ]] && shift
    local pid
    # A component started with other flags (the script changed since) is
    # restarted, so `up` converges to what this script says.
    if pid=$(proc_pid "$name") &&
        ! cmp -s "/proc/$pid/cmdline" <(printf '%s\0' "$BIN/$name" "$@"); then
        note "$name runs with outdated flags; restarting it"
        stop_proc "$name"
    fi
    if proc_pid "$name" >/dev/null; then
        if "$health" >/dev/null 2>&1; then
            ok "$name already running (127.0.0.1:$port)"
            return 0
        fi
        note "$name is running but not healthy yet; waiting"
    else
        require_port_free "$port" "$name"
        # Optional per-component hook, e.g. pre_start_kwok.
        if declare -F "pre_start_${name//-/_}" >/dev/null; then "pre_start_${name//-/_}"; fi
        start_proc "$name" "$@"
    fi
    wait_healthy "$name" "$LOGS/$name.log" "$timeout" "$health"
    ok "$name ready on 127.0.0.1:$port ($(elapsed "$t0"))"
}

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run: $* (install sudo or run as root)"
    fi
}

# apt-get install, refreshing the package lists only when they are missing or
# the first attempt fails (stale lists), so the usual path does no network I/O.
apt_install() {
    local lists=(/var/lib/apt/lists/*_Packages)
    step "installing Debian packages: $*"
    if [[ ! -e ${lists[0]} ]]; then
        as_root apt-get update
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
        note "install failed; refreshing package lists and retrying"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    fi
}
