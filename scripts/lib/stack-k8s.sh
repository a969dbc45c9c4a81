# shellcheck shell=bash disable=SC2153 # STATE and friends come from stack-common.sh
# The Kubernetes control plane for scripts/stack: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, built from Go modules and
# supervised here as plain processes (no Docker, no kwokctl). Sourced, not run.

K8S_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
CONTROLPLANE_MODULE=$REPO_ROOT/tests/kind/controlplane

# ---- binaries ------------------------------------------------------------------

kubectl_bin() {
    if command -v kubectl >/dev/null; then
        command -v kubectl
    elif [[ -x $BIN/kubectl ]]; then
        printf '%s\n' "$BIN/kubectl"
    else
        return 1
    fi
}

missing_binaries() {
    local b
    for b in "${K8S_COMPONENTS[@]}"; do
        [[ -x $BIN/$b ]] || printf '%s\n' "$b"
    done
    kubectl_bin >/dev/null || printf 'kubectl\n'
}

# A build started by hand (or by an older script) writes into the same cache;
# building again alongside it would double the time on a small machine.
wait_for_foreign_build() {
    local start=$SECONDS next=30
    local pattern='go (build|install) .*(k8s.io/kubernetes/cmd/kube-apiserver|sigs.k8s.io/kwok/cmd/kwok)'
    pgrep -f "$pattern" >/dev/null || return 0
    note "another Kubernetes build is running (pid $(pgrep -f "$pattern" | head -n 1)); waiting for it instead of building twice"
    while pgrep -f "$pattern" >/dev/null; do
        sleep 2
        if ((SECONDS - start >= next)); then
            note "still waiting for the other build ($((SECONDS - start))s)"
            next=$((next + 30))
        fi
    done
}

# Run a build command in the background and print a heartbeat, since `go
# build` is silent for minutes. Fails with the log tail.
run_build() {
    local what=$1 log=$2 pid start=$SECONDS
    shift 2
    "$@" >>"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 10
        kill -0 "$pid" 2>/dev/null && note "building $what... $((SECONDS - start))s"
    done
    wait "$pid" || die_with_log "$log" "building $what failed"
    ok "built $what in $((SECONDS - start))s"
}

ensure_binaries() {
    local missing tmp log
    missing=$(missing_binaries)
    [[ -z $missing ]] && return 0

    mkdir -p "$BIN_ROOT"
    # One builder at a time across concurrent `scripts/stack up` runs.
    exec {BUILD_LOCK}>"$BIN_ROOT/.build.lock"
    flock "$BUILD_LOCK"
    wait_for_foreign_build
    missing=$(missing_binaries)
    if [[ -z $missing ]]; then
        exec {BUILD_LOCK}>&-
        BUILD_LOCK=''
        return 0
    fi

    command -v go >/dev/null || die "Go is needed to build the control plane (missing: ${missing//$'\n'/ })"
    step "building Kubernetes $K8S_VERSION control plane and kwok $KWOK_VERSION from Go modules (missing: ${missing//$'\n'/ })"
    note "first time takes ~5 min with a warm Go cache, ~15-25 min cold on 2 cores; later runs reuse $BIN"

    # Build into a temp dir on the same filesystem and move each finished
    # binary in with an atomic rename: a killed build never leaves a truncated
    # binary in the cache, only missing ones (which the next run rebuilds).
    # Temp dirs of an interrupted build go first (we hold the lock: none is live).
    rm -rf "$BIN_ROOT"/build.??????
    tmp=$(mktemp -d "$BIN_ROOT/build.XXXXXX")
    log=$BIN_ROOT/build.log
    : >"$log"
    note "build log: $log"
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT

    # Stamp the version as the release build does; without it the binaries
    # report v0.0.0 and kubectl/clients warn about version skew.
    local minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    local -a pkgs=()
    grep -qx etcd <<<"$missing" && pkgs+=(./cmd/etcd)
    grep -qx kube-apiserver <<<"$missing" && pkgs+=(k8s.io/kubernetes/cmd/kube-apiserver)
    grep -qx kube-controller-manager <<<"$missing" && pkgs+=(k8s.io/kubernetes/cmd/kube-controller-manager)
    grep -qx kube-scheduler <<<"$missing" && pkgs+=(k8s.io/kubernetes/cmd/kube-scheduler)
    if ((${#pkgs[@]})); then
        # shellcheck disable=SC2016 # $1/$@ belong to the inner bash
        run_build "${pkgs[*]##*/}" "$log" \
            bash -c 'cd "$1" && shift && exec go build "$@"' _ "$CONTROLPLANE_MODULE" \
            -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"
    fi
    if grep -qx kubectl <<<"$missing"; then
        # kubectl's own dependencies are not in the control-plane go.sum, and
        # go.sum is not ours to grow for a fallback. Build from a scratch copy
        # of the module with -mod=mod: same pinned graph (replace directives),
        # the missing checksums are fetched and verified, the clone stays clean.
        local scratch=$tmp/kubectl-module
        mkdir -p "$scratch"
        cp "$CONTROLPLANE_MODULE/go.mod" "$CONTROLPLANE_MODULE/go.sum" "$scratch/"
        # shellcheck disable=SC2016 # $1/$@ belong to the inner bash
        run_build kubectl "$log" \
            bash -c 'cd "$1" && shift && exec go build -mod=mod "$@"' _ "$scratch" \
            -ldflags "$ldflags" -o "$tmp/" k8s.io/kubernetes/cmd/kubectl
        rm -rf "$scratch"
    fi
    if grep -qx kwok <<<"$missing"; then
        # `go install pkg@version` ignores the current module, so kwok keeps its
        # own dependency versions.
        run_build kwok "$log" env GOBIN="$tmp" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    fi

    mkdir -p "$BIN"
    local f
    for f in "$tmp"/*; do
        mv -f "$f" "$BIN/"
    done
    rm -rf "$tmp"
    trap - EXIT
    exec {BUILD_LOCK}>&-
    BUILD_LOCK=''

    ok "binaries cached in $BIN"
}

# ---- PKI -----------------------------------------------------------------------
# One CA signs everything: the apiserver serving cert (SANs 127.0.0.1 and
# localhost, so clients verify TLS without any insecure-skip) and one client cert
# per component. EC P-256 keys: instant to generate, accepted by Go and rustls.

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null && chmod 600 "$1"; }

# issue_cert <name> <subject> <extendedKeyUsage> [subjectAltName]
issue_cert() {
    local name=$1 subj=$2 eku=$3 san=${4:-}
    local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$eku
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
    [[ -n $san ]] && ext+=$'\n'"subjectAltName=$san"
    new_key "$PKI/$name.key"
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    local ca=${CA_NAME:-ca}
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 3650 -sha256 -extfile <(printf '%s\n' "$ext") -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr"
}

# Valid for at least another day?
cert_fresh() { [[ -f $PKI/$1.crt && -f $PKI/$1.key ]] && openssl x509 -checkend 86400 -noout -in "$PKI/$1.crt" >/dev/null; }

ensure_pki() {
    local created=()
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    if ! cert_fresh ca; then
        # A new CA invalidates every leaf cert and kubeconfig.
        find "$PKI" -maxdepth 1 -name '*.crt' ! -name 'front-proxy-*' -delete
        find "$PKI" -maxdepth 1 -name '*.key' ! -name 'front-proxy-*' ! -name 'sa.key' -delete
        new_key "$PKI/ca.key"
        openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=berth-stack-ca" -days 3650 -sha256 \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -out "$PKI/ca.crt" 2>/dev/null
        created+=(ca)
    fi
    if ! cert_fresh apiserver; then
        issue_cert apiserver "/CN=kube-apiserver" serverAuth \
            "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        created+=(apiserver)
    fi
    # Client identities: the cert's O is the group, CN the user. The built-in
    # RBAC bindings grant system:kube-controller-manager / system:kube-scheduler
    # exactly what those components need; admin and kwok are cluster admins.
    cert_fresh admin || { issue_cert admin "/O=system:masters/CN=berth-admin" clientAuth && created+=(admin); }
    cert_fresh kube-controller-manager || { issue_cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth && created+=(kube-controller-manager); }
    cert_fresh kube-scheduler || { issue_cert kube-scheduler "/CN=system:kube-scheduler" clientAuth && created+=(kube-scheduler); }
    cert_fresh kwok || { issue_cert kwok "/O=system:masters/CN=kwok-controller" clientAuth && created+=(kwok); }
    # Separate CA for the aggregation layer (front proxy), as kubeadm does: the
    # apiserver trusts requests carrying identity headers only from this CA.
    # Without it the controller-manager and scheduler log CA-bundle errors
    # forever, and an aggregated API (metrics-server) could not be added.
    if ! cert_fresh front-proxy-ca; then
        rm -f "$PKI"/front-proxy-*
        new_key "$PKI/front-proxy-ca.key"
        openssl req -x509 -new -key "$PKI/front-proxy-ca.key" -subj "/CN=berth-front-proxy-ca" -days 3650 -sha256 \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -out "$PKI/front-proxy-ca.crt" 2>/dev/null
        created+=(front-proxy-ca)
    fi
    if ! cert_fresh front-proxy-client; then
        CA_NAME=front-proxy-ca issue_cert front-proxy-client "/CN=front-proxy-client" clientAuth
        created+=(front-proxy-client)
    fi
    if [[ ! -f $PKI/sa.key || ! -f $PKI/sa.pub ]]; then
        # Service-account tokens: the apiserver signs with sa.key, verifies with sa.pub.
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
        openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
        chmod 600 "$PKI/sa.key"
        created+=(sa)
    fi
    if ((${#created[@]})); then
        ok "certificates created: ${created[*]}"
        PKI_CHANGED=1
    fi
    return 0
}

# write_kubeconfig <file> <client-cert-name>: self-contained (certs embedded) so
# it works from any directory and with any client. Replaced atomically and only
# when the content changes (new certs), so readers never see a partial file.
write_kubeconfig() {
    local file=$1 cert=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI/$cert.key")
contexts:
- name: berth
  context:
    cluster: berth
    user: $cert
current-context: berth
EOF
    chmod 600 "$tmp"
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$file"
    fi
}

write_kubeconfigs() {
    mkdir -p "$STATE/kube"
    write_kubeconfig "$KUBECONFIG_FILE" admin
    write_kubeconfig "$STATE/kube/kube-controller-manager.kubeconfig" kube-controller-manager
    write_kubeconfig "$STATE/kube/kube-scheduler.kubeconfig" kube-scheduler
    write_kubeconfig "$STATE/kube/kwok.kubeconfig" kwok
}

# ---- health checks ---------------------------------------------------------------

etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }
apiserver_healthy() {
    curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://127.0.0.1:$APISERVER_PORT/readyz" | grep -qx ok
}
# kcm and scheduler serve /healthz on a self-signed cert generated in memory;
# -k only affects this local liveness probe, not any client the tests use.
kcm_healthy() { curl -fsSk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" | grep -qx ok; }
scheduler_healthy() { curl -fsSk --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz" | grep -qx ok; }
kwok_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null; }

# ---- components ----------------------------------------------------------------

k8s_up() {
    ensure_binaries
    step "Kubernetes $K8S_VERSION control plane on 127.0.0.1 (state: $STATE)"
    ensure_pki
    write_kubeconfigs
    mkdir -p "$STATE/etcd" "$STATE/kwok"
    if [[ -n ${PKI_CHANGED:-} ]] && proc_pid kube-apiserver >/dev/null; then
        # Running components still hold the old certificates.
        note "certificates changed; restarting the control plane"
        k8s_down
    fi

    ensure_proc etcd "$ETCD_PORT" 60 etcd_healthy -- \
        --name=berth \
        --data-dir="$STATE/etcd/data" \
        --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="berth=http://127.0.0.1:$ETCD_PEER_PORT" \
        --auto-compaction-mode=periodic --auto-compaction-retention=1h \
        --log-level=warn

    # Admission plugins: the defaults. Node,RBAC so component identities are
    # real (a bug in a Role shows up here as it would in production).
    # No --advertise-address: 127.0.0.1 is no valid endpoint for the
    # `kubernetes` Service (loopback addresses are rejected); left unset, the
    # apiserver advertises the host's primary IP, which nothing here dials.
    ensure_proc kube-apiserver "$APISERVER_PORT" 120 apiserver_healthy -- \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
        --cert-dir="$STATE/kube" \
        --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
        --client-ca-file="$PKI/ca.crt" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI/sa.pub" \
        --service-account-signing-key-file="$PKI/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --authorization-mode=Node,RBAC \
        --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
        --requestheader-allowed-names=front-proxy-client \
        --requestheader-username-headers=X-Remote-User \
        --requestheader-group-headers=X-Remote-Group \
        --requestheader-extra-headers-prefix=X-Remote-Extra- \
        --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
        --proxy-client-key-file="$PKI/front-proxy-client.key" \
        --allow-privileged=true \
        --profiling=false

    local kcm_kc=$STATE/kube/kube-controller-manager.kubeconfig
    ensure_proc kube-controller-manager "$KCM_PORT" 60 kcm_healthy -- \
        --kubeconfig="$kcm_kc" \
        --authentication-kubeconfig="$kcm_kc" --authorization-kubeconfig="$kcm_kc" \
        --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
        --leader-elect=false \
        --controllers='*' \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$PKI/sa.key" \
        --root-ca-file="$PKI/ca.crt" \
        --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --kube-api-qps=100 --kube-api-burst=200 \
        --profiling=false

    local sched_kc=$STATE/kube/kube-scheduler.kubeconfig
    ensure_proc kube-scheduler "$SCHEDULER_PORT" 60 scheduler_healthy -- \
        --kubeconfig="$sched_kc" \
        --authentication-kubeconfig="$sched_kc" --authorization-kubeconfig="$sched_kc" \
        --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
        --leader-elect=false \
        --kube-api-qps=100 --kube-api-burst=200 \
        --profiling=false

    # kwok only acts through Stage objects; the bare binary has no defaults and
    # exits with "no stages found" without --config. Use the "fast" stages that
    # kwokctl installs by default, taken from the pinned kwok module itself;
    # pod-delete matters for GC tests, as no kubelet ever finishes a deletion.
    # (--disregard-status-with-* are deprecated in v0.8.0 in favour of stage
    # selectors, so they are not passed.) --server-address only serves /healthz.
    kwok_stages >"$STATE/kwok/stages.yaml"
    ensure_proc kwok "$KWOK_PORT" 60 kwok_healthy -- \
        --kubeconfig="$STATE/kube/kwok.kubeconfig" \
        --config="$STATE/kwok/stages.yaml" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --manage-nodes-with-label-selector= \
        --manage-single-node= \
        --cidr=10.0.0.1/24 \
        --node-ip=10.0.0.1 \
        --node-lease-duration-seconds=40 \
        --server-address="127.0.0.1:$KWOK_PORT"

    ensure_node
}

# kwok heartbeats through the node's Lease, and its holder identity is random
# per process. A fresh kwok therefore waits for the previous process's lease to
# expire (up to 40 s) before it touches the node or its pods, which after a
# restart shows up as pods stuck Pending. Nothing else can hold it: we are
# about to start the only kwok, so drop the stale lease and let it take over at
# once. (The node lifecycle controller tolerates a missing lease for its grace
# period, far longer than the moment until kwok recreates it.)
pre_start_kwok() {
    "$(kubectl_bin)" --kubeconfig="$KUBECONFIG_FILE" -n kube-node-lease \
        delete lease "$NODE_NAME" --ignore-not-found >/dev/null 2>&1 || true
}

# The fake node kwok manages. No taints: ordinary Deployments land on it
# without tolerations. Capacity is explicit so resource requests behave.
ensure_node() {
    local kubectl t0=$EPOCHREALTIME start=$SECONDS state
    kubectl=$(kubectl_bin)
    "$kubectl" --kubeconfig="$KUBECONFIG_FILE" apply -f - >/dev/null <<EOF || die "creating node $NODE_NAME failed"
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/role: agent
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec: {}
status:
  allocatable:
    cpu: "32"
    memory: 128Gi
    pods: "250"
  capacity:
    cpu: "32"
    memory: 128Gi
    pods: "250"
EOF
    # Ready alone is not enough: the node lifecycle controller removes the
    # not-ready NoSchedule taint a moment later, and until then nothing schedules.
    while :; do
        state=$("$kubectl" --kubeconfig="$KUBECONFIG_FILE" get node "$NODE_NAME" \
            -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} taints={.spec.taints[*].key}' 2>/dev/null || true)
        [[ $state == "True taints=" ]] && break
        ((SECONDS - start < 90)) || die_with_log "$LOGS/kwok.log" "node $NODE_NAME not Ready and untainted after 90s (Ready/taints: $state)"
        sleep 0.5
    done
    ok "node $NODE_NAME Ready ($(elapsed "$t0"))"
}

k8s_down() {
    local i
    # Reverse start order: clients first, etcd last.
    for ((i = ${#K8S_COMPONENTS[@]} - 1; i >= 0; i--)); do
        stop_proc "${K8S_COMPONENTS[i]}"
    done
}

# ---- optional: kind ------------------------------------------------------------
# BERTH_CLUSTER=kind uses a kind cluster instead of the processes above; needs
# `kind` and a working Docker engine, so it cannot run on machines like CI
# runners without Docker and is not exercised by our own checks.
KIND_CLUSTER=berth

kind_check() {
    command -v kind >/dev/null || die "BERTH_CLUSTER=kind needs the kind binary (https://kind.sigs.k8s.io)"
    docker info >/dev/null 2>&1 || die "BERTH_CLUSTER=kind needs a running Docker engine ('docker info' fails)"
    kubectl_bin >/dev/null || die "BERTH_CLUSTER=kind needs kubectl"
}

kind_up() {
    kind_check
    step "kind cluster '$KIND_CLUSTER'"
    if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
        # After `down` or a reboot the node container exists but is stopped.
        docker start "$KIND_CLUSTER-control-plane" >/dev/null
    else
        kind create cluster --name "$KIND_CLUSTER" --wait 120s
    fi
    kind get kubeconfig --name "$KIND_CLUSTER" >"$KUBECONFIG_FILE"
    chmod 600 "$KUBECONFIG_FILE"
    "$(kubectl_bin)" --kubeconfig="$KUBECONFIG_FILE" wait --for=condition=Ready nodes --all --timeout=120s >/dev/null
    ok "kind cluster ready"
}

kind_down() {
    if docker stop "$KIND_CLUSTER-control-plane" >/dev/null 2>&1; then ok "kind node stopped"; fi
}
kind_delete() { kind delete cluster --name "$KIND_CLUSTER" >/dev/null 2>&1 || true; }

# Concatenates kwok's default stages from the module cache (downloaded by the
# same `go install` that built the binary, so no extra network beyond it).
kwok_stages() {
    local dir
    dir=$(cd "$REPO_ROOT/tests/kind/controlplane" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -d $dir ]] || die "cannot find the kwok $KWOK_VERSION module to read its stages"
    local f
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        printf -- '---\n'
        cat "$dir/kustomize/stage/$f"
    done
}
