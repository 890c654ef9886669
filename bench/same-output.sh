#!/usr/bin/env bash
# Behaviour unchanged: runs the pipeline (one collector, N processors, the aggregator, plain
# links on loopback, --exit-on-eos) over every capture in ../shared/pcaps with the binaries of
# two builds, and compares byte for byte what each wrote: the conn log, the alerts log, the
# accounting report (the health log; incarnation ids and conn_bytes_sent, which vary from run to
# run of one build, set to 0) and every
# process's exit code. Processes are named (c0, p0, p1...) so that names do not carry pids.
#
# Usage: bench/same-output.sh --before REV [--after REV] [--processors 2] [--pcaps DIR]
#                             [--before-bin DIR] [--after-bin DIR]
#
#   REV is any git revision of this repository; it is checked out in a worktree under
#   target/same-output/ and built there (release, cached across runs). --after defaults to the
#   working tree itself (target/release). --before-bin/--after-bin take an already built
#   directory of binaries instead.
#
# Prints one line per capture (same | DIFFERS: which files) and a total; exits 1 if any differs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

BEFORE= AFTER= BEFORE_BIN= AFTER_BIN= N=2
PCAPS="$root/../shared/pcaps"
die() { echo "same-output.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --before) BEFORE=${2:?}; shift 2 ;;
        --after) AFTER=${2:?}; shift 2 ;;
        --before-bin) BEFORE_BIN=${2:?}; shift 2 ;;
        --after-bin) AFTER_BIN=${2:?}; shift 2 ;;
        --processors) N=${2:?}; shift 2 ;;
        --pcaps) PCAPS=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -n "$BEFORE" ] || [ -n "$BEFORE_BIN" ] || die "--before REV (or --before-bin DIR) is required"
[ -d "$PCAPS" ] || die "no captures at $PCAPS"

# Builds revision $1 in a worktree of its own; prints the directory of its binaries.
build_rev() {
    local rev sha dir
    rev=$1
    sha=$(git rev-parse --verify "$rev^{commit}") || die "not a revision: $rev"
    dir="$root/target/same-output/$sha"
    if [ ! -d "$dir/src" ]; then
        rm -rf "$dir/src"
        git worktree add --detach "$dir/src" "$sha" >/dev/null 2>&1 || die "cannot check out $rev"
    fi
    (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --release --bins --quiet) >&2 \
        || die "cannot build $rev"
    echo "$dir/target/release"
}

if [ -z "$BEFORE_BIN" ]; then BEFORE_BIN=$(build_rev "$BEFORE"); fi
if [ -z "$AFTER_BIN" ]; then
    if [ -n "$AFTER" ]; then
        AFTER_BIN=$(build_rev "$AFTER")
    else
        cargo build --release --bins --quiet >&2 || die "cannot build the working tree"
        AFTER_BIN="$root/target/release"
    fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# One run of capture $2 with the binaries in $1, into directory $3.
run_one() {
    local bin=$1 pcap=$2 out=$3 pa p i procs=() pids=()
    mkdir -p "$out"
    pa=$(free_port)
    "$bin/tapflow-aggregator" --plain --listen "tcp://127.0.0.1:$pa" --processors "$N" --exit-on-eos \
        --conn-log "$out/conn.jsonl" --alerts-log "$out/alerts.jsonl" \
        --health-log "$out/health.jsonl" 2>"$out/aggregator.log" &
    local agg=$!
    for ((i = 0; i < N; i++)); do
        p=$(free_port)
        "$bin/tapflow-processor" --plain --listen "tcp://127.0.0.1:$p" \
            --aggregator "tcp://127.0.0.1:$pa" --collectors 1 --exit-on-eos --name "p$i" \
            2>"$out/processor$i.log" &
        pids+=($!)
        procs+=(--processor "tcp://127.0.0.1:$p")
    done
    local code=0
    timeout 120 "$bin/tapflow-collector" --plain --pcap "$pcap" "${procs[@]}" --name c0 \
        2>"$out/collector.log" \
        || code=$?
    echo "collector $code" >"$out/exit"
    for ((i = 0; i < N; i++)); do
        code=0
        timeout 60 tail --pid="${pids[$i]}" -f /dev/null || true
        wait "${pids[$i]}" || code=$?
        echo "processor$i $code" >>"$out/exit"
    done
    code=0
    wait "$agg" || code=$?
    echo "aggregator $code" >>"$out/exit"
    # Two fields of the report differ from run to run of the same binaries: incarnation ids
    # (random per process start) and a processor's conn_bytes_sent (how many messages carried
    # its records depends on when its wall-clock heartbeats fell).
    if [ -f "$out/health.jsonl" ]; then
        sed -i -E 's/"incarnation":[0-9]+/"incarnation":0/g; s/"conn_bytes_sent":[0-9]+/"conn_bytes_sent":0/g' \
            "$out/health.jsonl"
    fi
}

work=$(mktemp -d /tmp/tapflow-same.XXXXXX)
trap 'rm -rf "$work"' EXIT
same=0 differs=0
for pcap in "$PCAPS"/*.pcap "$PCAPS"/*.pcapng; do
    [ -f "$pcap" ] || continue
    name=$(basename "$pcap")
    run_one "$BEFORE_BIN" "$pcap" "$work/$name/before"
    run_one "$AFTER_BIN" "$pcap" "$work/$name/after"
    bad=()
    for f in conn.jsonl alerts.jsonl health.jsonl exit; do
        cmp -s "$work/$name/before/$f" "$work/$name/after/$f" || bad+=("$f")
    done
    if [ ${#bad[@]} -eq 0 ]; then
        same=$((same + 1))
        printf '%-48s same (%s conns, %s alerts)\n' "$name" \
            "$(wc -l <"$work/$name/after/conn.jsonl")" "$(wc -l <"$work/$name/after/alerts.jsonl")"
    else
        differs=$((differs + 1))
        printf '%-48s DIFFERS: %s\n' "$name" "${bad[*]}"
        for f in "${bad[@]}"; do
            { diff <(fold -w 200 "$work/$name/before/$f") <(fold -w 200 "$work/$name/after/$f") || true; } \
                | head -n 8 | sed 's/^/    /'
        done
    fi
done
echo "same-output: $same captures byte-identical, $differs differ ($N processors; before: $BEFORE_BIN, after: $AFTER_BIN)"
[ "$differs" -eq 0 ]
