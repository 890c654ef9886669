#!/usr/bin/env bash
# A/B of two builds on the same machine state: the pipeline (collector -> N processors ->
# aggregator writing a conn log, plain links on loopback) over one capture, alternately with the
# binaries of directory A and directory B, run after run, so noise hits both alike.
#
# Usage: bench/ab.sh --capture F --a DIR --b DIR [--runs 6] [--processors 2] [--b-durable]
#
#   --b-durable: side B runs with nothing lost at an aggregator restart (a --state-dir in the
#   run's directory, --ack-listen, and the processors' --aggregator-acks).
#
#   DIR holds tapflow-collector, tapflow-processor and tapflow-aggregator (copy or symlink the
#   ones not under test from the same build, so that only one stage differs).
#
# Prints, per run: seconds from the collector's start to its exit, to the last processor's
# exit and to the aggregator's exit; the tail (last processor's exit to the aggregator's); the
# aggregator's CPU seconds and peak RSS (KiB); the collector's CPU seconds and the processors'
# (summed). Then the median of each, per side.
set -euo pipefail

RUNS=6
N=2
B_DURABLE=
CAPTURE=
A=
B=
die() { echo "ab.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --capture) CAPTURE=${2:?}; shift 2 ;;
        --a) A=${2:?}; shift 2 ;;
        --b) B=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --processors) N=${2:?}; shift 2 ;;
        --b-durable) B_DURABLE=1; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -f "$CAPTURE" ] || die "--capture: no such file: $CAPTURE"
for d in "$A" "$B"; do
    for b in tapflow-collector tapflow-processor tapflow-aggregator; do
        [ -x "$d/$b" ] || die "$d/$b is missing (--a and --b name directories of binaries)"
    done
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$N" =~ ^[1-9][0-9]*$ ]] || die "--runs and --processors: positive numbers"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# One run with the binaries of $1 (durable when $2 is 1); prints "coll procs agg tail agg_cpu
# agg_rss coll_cpu proc_cpu" (proc_cpu: the processors' CPU seconds summed).
one() {
    local bin=$1 d pa pk i p t0 tc ta tp=0 e procs=() pids=() agg_extra=() proc_extra=()
    d=$(mktemp -d /tmp/tapflow-ab.XXXXXX)
    pa=$(free_port)
    if [ "${2:-}" = 1 ]; then
        pk=$(free_port)
        agg_extra=(--state-dir "$d/state" --ack-listen "tcp://127.0.0.1:$pk")
        proc_extra=(--aggregator-acks "tcp://127.0.0.1:$pk")
    fi
    /usr/bin/time -f "%U %S %M" -o "$d/agg.time" "$bin/tapflow-aggregator" --plain "${agg_extra[@]}" \
        --listen "tcp://127.0.0.1:$pa" --processors "$N" --exit-on-eos \
        --health-log "$d/health.jsonl" --conn-log "$d/conn.jsonl" 2>"$d/aggregator.log" &
    local agg=$!
    for ((i = 0; i < N; i++)); do
        p=$(free_port)
        ( /usr/bin/time -f "%U %S" -o "$d/processor$i.time" "$bin/tapflow-processor" --plain --listen "tcp://127.0.0.1:$p" \
            --aggregator "tcp://127.0.0.1:$pa" --collectors 1 --exit-on-eos "${proc_extra[@]}" 2>"$d/processor$i.log"
          now >"$d/processor$i.end" ) &
        pids+=($!)
        procs+=(--processor "tcp://127.0.0.1:$p")
    done
    sleep 0.5
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$d/collector.time" \
        "$bin/tapflow-collector" --plain --pcap "$CAPTURE" "${procs[@]}" 2>"$d/collector.log" \
        || die "collector failed: $(tail -n 3 "$d/collector.log")"
    tc=$(now)
    wait "$agg" || die "aggregator failed: $(tail -n 3 "$d/aggregator.log")"
    ta=$(now)
    wait "${pids[@]}"
    for ((i = 0; i < N; i++)); do
        e=$(cat "$d/processor$i.end")
        tp=$(awk -v a="$tp" -v b="$e" 'BEGIN { print (b > a) ? b : a }')
    done
    read -r user sys rss <"$d/agg.time"
    read -r cu cs <"$d/collector.time"
    local pcpu
    pcpu=$(cat "$d"/processor*.time | awk '{ s += $1 + $2 } END { print s }')
    awk -v t0="$t0" -v tc="$tc" -v tp="$tp" -v ta="$ta" -v u="$user" -v s="$sys" -v m="$rss" \
        -v cc="$(awk -v a="$cu" -v b="$cs" 'BEGIN { print a + b }')" -v pc="$pcpu" \
        'BEGIN { printf "%.3f %.3f %.3f %.3f %.2f %d %.2f %.2f\n", tc - t0, tp - t0, ta - t0, ta - tp, u + s, m, cc, pc }'
    rm -rf "$d"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

OUT=$(mktemp /tmp/tapflow-ab.XXXXXX)
trap 'rm -f "$OUT"' EXIT
printf '%-4s %4s %8s %8s %8s %8s %8s %10s %8s %8s\n' side run coll procs agg tail agg_cpu agg_rss_kb coll_cpu proc_cpu
for ((r = 1; r <= RUNS; r++)); do
    for side in A B; do
        dir=$A durable=; [ "$side" = B ] && dir=$B durable=$B_DURABLE
        line=$(one "$dir" "$durable")
        echo "$side $line" >>"$OUT"
        # shellcheck disable=SC2086
        printf '%-4s %4d %8s %8s %8s %8s %8s %10s %8s %8s\n' "$side" "$r" $line
    done
done
echo "medians of $RUNS runs:"
for side in A B; do
    printf '%-4s %4s' "$side" ""
    for col in 2 3 4 5 6 7 8 9; do
        printf ' %8s' "$(awk -v s="$side" -v c="$col" '$1 == s { print $c }' "$OUT" | median)"
    done
    echo
done
