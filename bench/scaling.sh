#!/usr/bin/env bash
# Scaling: the whole pipeline (collector -> N processors -> aggregator writing the conn log) on
# one capture with N = 1, 2, 3, 4 processors, interleaved run by run, with each process's CPU
# seconds and peak RSS (GNU time). Prints medians per N, and the per-stage costs they imply:
# CPU nanoseconds per packet for the collector, per summary for the processors (all of them),
# per record for the aggregator. From those, a model of how many processor cores a packet rate
# needs, when the machine has the cores (this one has 2: past N = 2 processors only share them).
#
# Usage: bench/scaling.sh [--packets 5000000] [--flows 200000] [--runs 3] [--max 4]
set -euo pipefail

PACKETS=5000000
FLOWS=200000
RUNS=3
MAX=4
while (($#)); do
    case "$1" in
        --packets) PACKETS=${2:?}; shift 2 ;;
        --flows) FLOWS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --max) MAX=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "scaling.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
cd "$ROOT"
cargo build --release --quiet --workspace
CAPTURE=$ROOT/bench/data/synth-$PACKETS-$FLOWS.pcap
if [[ ! -s $CAPTURE ]]; then
    mkdir -p bench/data
    "$BIN/tapflow-gen" --packets "$PACKETS" --flows "$FLOWS" --seed 1 --out "$CAPTURE.part" >&2
    mv "$CAPTURE.part" "$CAPTURE"
fi
cat "$CAPTURE" >/dev/null
TMP=$(mktemp -d /tmp/tapflow-scaling.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
T=(/usr/bin/time -f '%e %U %S %M')
port=$((20000 + RANDOM % 20000))

# One run with N processors: prints "e2e_s coll_cpu proc_cpu agg_cpu proc_rss_max agg_rss records".
one() {
    local n=$1 d=$TMP/run i args=() pids=()
    rm -rf "$d"; mkdir -p "$d"
    local pa=$port
    "${T[@]}" -o "$d/agg.t" "$BIN/tapflow-aggregator" --listen "tcp://127.0.0.1:$pa" --processors "$n" \
        --exit-on-eos --plain --conn-log "$d/conn.jsonl" --health-log "$d/health.jsonl" 2>"$d/agg.log" &
    local agg=$!
    for ((i = 0; i < n; i++)); do
        "${T[@]}" -o "$d/p$i.t" "$BIN/tapflow-processor" --listen "tcp://127.0.0.1:$((pa + 1 + i))" \
            --aggregator "tcp://127.0.0.1:$pa" --collectors 1 --exit-on-eos --plain 2>"$d/p$i.log" &
        pids+=($!)
        args+=(--processor "tcp://127.0.0.1:$((pa + 1 + i))")
    done
    sleep 0.5
    local t0 t1
    t0=$(date +%s%N)
    "${T[@]}" -o "$d/c.t" "$BIN/tapflow-collector" --pcap "$CAPTURE" --plain "${args[@]}" 2>"$d/c.log"
    wait "$agg"
    t1=$(date +%s%N)
    for p in "${pids[@]}"; do wait "$p"; done
    grep -q '"reconciled":true' "$d/health.jsonl" || { echo "scaling.sh: run with $n processors did not reconcile" >&2; exit 1; }
    local records
    records=$(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; print(r["conns"]["released"])' "$d/health.jsonl")
    cpu() { awk '{printf "%.3f", $2 + $3}' "$1"; }
    local pc=0 pr=0
    for ((i = 0; i < n; i++)); do
        pc=$(awk -v a="$pc" -v b="$(cpu "$d/p$i.t")" 'BEGIN{printf "%.3f", a + b}')
        pr=$(awk -v a="$pr" -v b="$(awk '{print $4}' "$d/p$i.t")" 'BEGIN{print (b > a) ? b : a}')
    done
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b - a) / 1e9}') $(cpu "$d/c.t") $pc $(cpu "$d/agg.t") $pr $(awk '{print $4}' "$d/agg.t") $records"
    port=$((port + 10))
}

declare -A ROWS
for run in $(seq "$RUNS"); do
    for n in $(seq "$MAX"); do
        row=$(one "$n")
        echo "run $run, $n processors: $row" >&2
        ROWS[$n]+="$row"$'\n'
    done
done

med() { sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.3f", m}'; }
col() { printf '%s' "${ROWS[$1]}" | awk -v c="$2" 'NF {print $c}' | med; }

echo
echo "=== scaling: $(basename "$CAPTURE"), $PACKETS packets; medians of $RUNS runs; $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1))"
echo "Command: bench/scaling.sh --packets $PACKETS --flows $FLOWS --runs $RUNS --max $MAX"
echo
echo "| processors | end to end | packets/s | collector CPU s | processors CPU s (all) | aggregator CPU s | peak RSS processor / aggregator |"
echo "|---|---|---|---|---|---|---|"
for n in $(seq "$MAX"); do
    e2e=$(col "$n" 1)
    printf '| %s | %s s | %s | %s | %s | %s | %s / %s MB |\n' "$n" "$e2e" \
        "$(awk -v p="$PACKETS" -v s="$e2e" 'BEGIN{printf "%.0f", p / s}')" \
        "$(col "$n" 2)" "$(col "$n" 3)" "$(col "$n" 4)" \
        "$(col "$n" 5 | awk '{printf "%.0f", $1 / 1024}')" "$(col "$n" 6 | awk '{printf "%.0f", $1 / 1024}')"
done
records=$(col 1 7 | awk '{printf "%.0f", $1}')
c_ns=$(awk -v c="$(col 1 2)" -v p="$PACKETS" 'BEGIN{printf "%.0f", c * 1e9 / p}')
p_ns=$(awk -v c="$(col 1 3)" -v p="$PACKETS" 'BEGIN{printf "%.0f", c * 1e9 / p}')
pmax_ns=$(awk -v c="$(col "$MAX" 3)" -v p="$PACKETS" 'BEGIN{printf "%.0f", c * 1e9 / p}')
a_us=$(awk -v c="$(col 1 4)" -v r="$records" 'BEGIN{printf "%.2f", c * 1e6 / r}')
cat <<EOF

Per-stage CPU cost on this machine (from the 1-processor runs; $records records):
  collector   $c_ns ns per packet (one per tap; it does not shard across cores)
  processors  $p_ns ns per summary, summed over processors (with $MAX processors: $pmax_ns ns: the
              per-message and per-process overhead that more processors add on these 2 cores)
  aggregator  $a_us us per connection record
Model: a processor core at this speed, kept at 70% busy, handles 0.7e9 / $p_ns = $(awk -v n="$p_ns" 'BEGIN{printf "%.2f", 0.7e9 / n / 1e6}') M summaries/s;
  so R packets/s need ceil(R * $p_ns / 0.7e9) processors (1M/s: $(awk -v n="$p_ns" 'BEGIN{x = 1e6 * n / 0.7e9; printf "%d", (x == int(x)) ? x : int(x) + 1}'), 5M/s: $(awk -v n="$p_ns" 'BEGIN{x = 5e6 * n / 0.7e9; printf "%d", (x == int(x)) ? x : int(x) + 1}'), 10M/s: $(awk -v n="$p_ns" 'BEGIN{x = 1e7 * n / 0.7e9; printf "%d", (x == int(x)) ? x : int(x) + 1}')),
  a collector per $(awk -v n="$c_ns" 'BEGIN{printf "%.1f", 0.7e9 / n / 1e6}') M packets/s of tap traffic, and one aggregator per $(awk -v u="$a_us" 'BEGIN{printf "%.0f", 0.7e6 / u / 1e3}')k records/s.
EOF
