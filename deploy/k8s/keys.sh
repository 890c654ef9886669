#!/usr/bin/env bash
# Makes tapflow's CURVE keys for Kubernetes and prints them as three Secrets:
#   tapflow-collector-keys  (tapflow-tap): collector.key, processor.pub, aggregator.pub
#   tapflow-processor-keys  (tapflow):     processor.key, collectors.clients, aggregator.pub
#   tapflow-aggregator-keys (tapflow):     aggregator.key, processors.clients (the processors'
#     key, and the collectors' for its control channel, each bound as below)
# Usage: deploy/k8s/keys.sh DIR [TAP_NODE...] | kubectl apply -f -
# DIR (new, mode 0700) receives the key pairs (mode 0600) made by the binaries' `keygen`: keep
# it offline or delete it once applied. The collectors' key is bound to the TAP_NODE names given
# (their names are their nodes'); with none it may send as any name (the processors log a WARN).
# The processors' key is bound to tapflow-processor-0 .. -$((TAPFLOW_MAX_PROCESSORS - 1)) (16 by
# default). The binaries are taken from TAPFLOW_BIN (a directory) or PATH.
set -euo pipefail

if (($# < 1)); then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
dir=$1
shift
max=${TAPFLOW_MAX_PROCESSORS:-16}
bin() { if [[ -n ${TAPFLOW_BIN:-} ]]; then echo "$TAPFLOW_BIN/$1"; else command -v "$1"; fi; }

mkdir -m 0700 "$dir"
"$(bin tapflow-collector)" keygen --out "$dir/collector" >/dev/null
"$(bin tapflow-processor)" keygen --out "$dir/processor" >/dev/null
"$(bin tapflow-aggregator)" keygen --out "$dir/aggregator" >/dev/null

# `public = "..."` of a .pub file, with `names = [...]` when names are given.
bind() {
    local pub=$1 names=""
    shift
    if (($#)); then
        names=$(printf '"%s", ' "$@")
        names=", names = [${names%, }]"
    fi
    sed -n "s/^public = .*/&$names/p" "$pub"
}
bind "$dir/collector.pub" "$@" >"$dir/collectors.clients"
procs=()
for ((i = 0; i < max; i++)); do procs+=("tapflow-processor-$i"); done
bind "$dir/processor.pub" "${procs[@]}" >"$dir/processors.clients"
# The collectors subscribe to the aggregator's processor-set announcements (control_listen).
cat "$dir/collectors.clients" >>"$dir/processors.clients"

secret() {
    local name=$1 ns=$2
    shift 2
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$ns"
    printf '  labels:\n    app.kubernetes.io/part-of: tapflow\ntype: Opaque\ndata:\n'
    for f in "$@"; do
        printf '  %s: %s\n' "$f" "$(base64 -w0 "$dir/$f")"
    done
}
secret tapflow-collector-keys tapflow-tap collector.key processor.pub aggregator.pub
secret tapflow-processor-keys tapflow processor.key collectors.clients aggregator.pub
secret tapflow-aggregator-keys tapflow aggregator.key processors.clients
