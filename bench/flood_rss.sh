#!/usr/bin/env bash
# Whole-process memory at the flow cap: a spoofed SYN flood (every packet its own five-tuple,
# none answered) through collector -> 1 processor -> aggregator, once per --max-flows value,
# printing each process's peak RSS (VmHWM, from /usr/bin/time) and what the processor reports.
#
# Usage: bench/flood_rss.sh [--bin DIR] [--packets 2500000] [--rate 1000000]
#                           [--caps "500000 1000000"] [--runs 1] [--keep FILE]
#
#   --bin    directory of tapflow-gen, tapflow-collector, tapflow-processor, tapflow-aggregator
#            (default target/release; build with `cargo build --release --bins`)
#   --rate   SYNs per second of capture time: at 1,000,000 the 2.5M flows all arrive within the
#            5 s attempt timeout, so the table fills to the cap and evicts the rest
#   --keep   keep the capture at FILE (default: a temp file, deleted at exit)
#
# The aggregator writes its conn log to /dev/null. Prints one line per run: the cap, the
# processor's, collector's and aggregator's peak RSS (MiB), the processor's peak per flow at the
# cap (bytes), its flows evicted and records sent, and the seconds the run took.
set -euo pipefail

BIN=target/release
PACKETS=2500000
RATE=1000000
CAPS="500000 1000000"
RUNS=1
KEEP=
die() { echo "flood_rss.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN=${2:?}; shift 2 ;;
        --packets) PACKETS=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --caps) CAPS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --keep) KEEP=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
for b in tapflow-gen tapflow-collector tapflow-processor tapflow-aggregator; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing (cargo build --release --bins)"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs: a positive number"

WORK=$(mktemp -d /tmp/tapflow-flood.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CAPTURE=${KEEP:-$WORK/flood.pcap}
if [ ! -f "$CAPTURE" ]; then
    "$BIN/tapflow-gen" --syn-flood --packets "$PACKETS" --rate "$RATE" --out "$CAPTURE" >&2
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
counter() { grep -o "\"$1\":[0-9]*" "$2" | tail -n 1 | cut -d: -f2; }

# One run at cap $1: prints "cap proc_mib coll_mib agg_mib proc_bytes_per_flow evicted sent secs".
one() {
    local cap=$1 d pa pp t0 t1
    d=$(mktemp -d "$WORK/run.XXXXXX")
    pa=$(free_port)
    pp=$(free_port)
    /usr/bin/time -f "%M" -o "$d/agg.rss" "$BIN/tapflow-aggregator" --plain \
        --listen "tcp://127.0.0.1:$pa" --processors 1 --exit-on-eos \
        --health-log "$d/health.jsonl" --conn-log /dev/null 2>"$d/aggregator.log" &
    local agg=$!
    /usr/bin/time -f "%M" -o "$d/proc.rss" "$BIN/tapflow-processor" --plain \
        --listen "tcp://127.0.0.1:$pp" --aggregator "tcp://127.0.0.1:$pa" --collectors 1 \
        --exit-on-eos --max-flows "$cap" 2>"$d/processor.log" &
    local proc=$!
    sleep 0.5
    t0=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$d/coll.rss" "$BIN/tapflow-collector" --plain --pcap "$CAPTURE" \
        --processor "tcp://127.0.0.1:$pp" 2>"$d/collector.log" \
        || die "collector failed: $(tail -n 3 "$d/collector.log")"
    wait "$proc" || die "processor failed: $(tail -n 3 "$d/processor.log")"
    wait "$agg" || die "aggregator failed: $(tail -n 3 "$d/aggregator.log")"
    t1=$(date +%s.%N)
    local p c a evicted sent
    p=$(tail -n 1 "$d/proc.rss")
    c=$(tail -n 1 "$d/coll.rss")
    a=$(tail -n 1 "$d/agg.rss")
    evicted=$(counter flows_evicted "$d/health.jsonl")
    sent=$(counter records_sent "$d/health.jsonl")
    awk -v cap="$cap" -v p="$p" -v c="$c" -v a="$a" -v e="${evicted:-?}" -v s="${sent:-?}" \
        -v t0="$t0" -v t1="$t1" 'BEGIN {
            printf "%8d %9.0f %9.0f %9.0f %10.0f %9s %9s %6.1f\n",
                cap, p / 1024, c / 1024, a / 1024, p * 1024 / cap, e, s, t1 - t0 }'
    rm -rf "$d"
}

echo "flood: $PACKETS spoofed SYNs at $RATE/s of capture time; binaries: $BIN"
printf "%8s %9s %9s %9s %10s %9s %9s %6s\n" max_flows proc_MiB coll_MiB agg_MiB proc_B/flow \
    evicted sent secs
for ((r = 0; r < RUNS; r++)); do
    for cap in $CAPS; do
        one "$cap"
    done
done
