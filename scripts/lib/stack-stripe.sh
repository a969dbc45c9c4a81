# shellcheck shell=bash disable=SC2153 # STATE and friends come from stack-common.sh
# stripe-mock (Stripe's OpenAPI-driven mock) for scripts/stack: built from its
# Go module, cached in ~/.cache/berth, served on loopback over HTTP. The
# emulator's contract test sends it the requests the emulator accepts.
# Sourced, not run.

STRIPE_MOCK_VERSION=v0.203.0
STRIPE_MOCK_PORT=12111
STRIPE_MOCK_BIN=$CACHE_ROOT/stripe-mock-$STRIPE_MOCK_VERSION/bin

stripe_mock_healthy() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' -u sk_test_123: \
        "http://127.0.0.1:$STRIPE_MOCK_PORT/v1/payment_intents" 2>/dev/null) == 200 ]]
}

# `go install pkg@version` keeps stripe-mock's own dependency versions; -mod=mod
# because its module has no vendor directory we could rely on.
stripe_mock_build() {
    local dir=${STRIPE_MOCK_BIN%/bin} tmp
    [[ -x $STRIPE_MOCK_BIN/stripe-mock ]] && return 0
    command -v go >/dev/null || die "Go is needed to build stripe-mock $STRIPE_MOCK_VERSION"
    mkdir -p "$dir"
    exec {BUILD_LOCK}>"$dir/.build.lock"
    flock "$BUILD_LOCK"
    if [[ ! -x $STRIPE_MOCK_BIN/stripe-mock ]]; then
        step "building stripe-mock $STRIPE_MOCK_VERSION from its Go module"
        # Into a temp dir first, then one rename: a killed build leaves no
        # truncated binary behind.
        rm -rf "$dir"/build.??????
        tmp=$(mktemp -d "$dir/build.XXXXXX")
        : >"$dir/build.log"
        run_build stripe-mock "$dir/build.log" env GOFLAGS=-mod=mod GOBIN="$tmp" \
            go install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION"
        mkdir -p "$STRIPE_MOCK_BIN"
        mv -f "$tmp/stripe-mock" "$STRIPE_MOCK_BIN/"
        rm -rf "$tmp"
    fi
    exec {BUILD_LOCK}>&-
    BUILD_LOCK=''
}

stripe_mock_up() {
    step "stripe-mock $STRIPE_MOCK_VERSION on 127.0.0.1:$STRIPE_MOCK_PORT"
    stripe_mock_build
    # The process helpers run $BIN/<name>; stripe-mock has its own cache dir.
    local BIN=$STRIPE_MOCK_BIN
    ensure_proc stripe-mock "$STRIPE_MOCK_PORT" 60 stripe_mock_healthy -- \
        -http-addr "127.0.0.1:$STRIPE_MOCK_PORT"
}

stripe_mock_down() {
    local BIN=$STRIPE_MOCK_BIN
    stop_proc stripe-mock
}

stripe_mock_pid() {
    local BIN=$STRIPE_MOCK_BIN
    proc_pid stripe-mock
}
