#!/usr/bin/env bash
# Live capture at line rate: tcpreplay --topspeed pushes a generated capture into one end of a
# veth pair; on the other end, in the same run, tcpdump (-w /dev/null) and tapflow-collector
# (sending to tapflow-nullsink, a processor that decodes and discards) capture the same link with
# the same kernel buffer. Prints, per run, what each received and what the kernel dropped for
# each, and the rate tcpreplay achieved. Needs root, iproute2 and tcpreplay; everything happens
# in two network namespaces this script makes and removes.
#
# Usage: bench/live.sh [--packets 1000000] [--flows 40000] [--runs 3] [--buffer-mb 64]
set -euo pipefail

PACKETS=1000000
FLOWS=40000
RUNS=3
BUFFER_MB=64
while (($#)); do
    case "$1" in
        --packets) PACKETS=${2:?}; shift 2 ;;
        --flows) FLOWS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --buffer-mb) BUFFER_MB=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "live.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "live.sh: needs root" >&2; exit 2; }
for t in ip tcpreplay tcpdump; do command -v "$t" >/dev/null || { echo "live.sh: $t missing" >&2; exit 2; }; done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
cd "$ROOT"
cargo build --release --quiet --bin tapflow-collector --bin tapflow-gen --bin tapflow-nullsink
CAPTURE=$ROOT/bench/data/synth-$PACKETS-$FLOWS.pcap
if [[ ! -s $CAPTURE ]]; then
    mkdir -p "$ROOT/bench/data"
    "$BIN/tapflow-gen" --packets "$PACKETS" --flows "$FLOWS" --seed 1 --out "$CAPTURE.part" >&2
    mv "$CAPTURE.part" "$CAPTURE"
fi
cat "$CAPTURE" >/dev/null

p="tfb$$"
TMP=$(mktemp -d /tmp/tapflow-live.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]+"${pids[@]}"}"; do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$p-tx" 2>/dev/null || true
    ip netns del "$p-rx" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$p-tx"
ip netns add "$p-rx"
ip -n "$p-rx" link set lo up
ip -n "$p-tx" link add tx0 type veth peer name rx0 netns "$p-rx"
ip -n "$p-tx" link set tx0 up
ip -n "$p-rx" link set rx0 up

field() { grep -o "$2=[0-9]*" <<<"$1" | head -n 1 | cut -d= -f2; }
# CPU seconds a running process has used (utime + stime from /proc, in clock ticks).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo "?"; }
rows=()
for run in $(seq "$RUNS"); do
    ip netns exec "$p-rx" "$BIN/tapflow-nullsink" --listen tcp://127.0.0.1:5601 >"$TMP/sink.out" 2>&1 &
    sink=$!; pids+=("$sink")
    ip netns exec "$p-rx" "$BIN/tapflow-collector" --interface rx0 --buffer-mb "$BUFFER_MB" \
        --processor tcp://127.0.0.1:5601 --plain --name live 2>"$TMP/collector.log" &
    coll=$!; pids+=("$coll")
    ip netns exec "$p-rx" tcpdump -i rx0 -n -B $((BUFFER_MB * 1024)) -w /dev/null 2>"$TMP/tcpdump.log" &
    tcpd=$!; pids+=("$tcpd")
    for _ in $(seq 100); do
        grep -q "capture open" "$TMP/collector.log" && grep -q "listening on" "$TMP/tcpdump.log" && break
        sleep 0.1
    done
    sleep 0.5
    ip netns exec "$p-tx" tcpreplay -i tx0 --topspeed "$CAPTURE" >"$TMP/tcpreplay.log" 2>&1
    sleep 2
    td_cpu=$(cpu_s "$tcpd"); c_cpu=$(cpu_s "$coll")
    kill -INT "$tcpd"; kill -TERM "$coll"
    wait "$tcpd" || true
    wait "$coll" || { echo "live.sh: the collector failed: $(tail -n 5 "$TMP/collector.log")" >&2; exit 1; }
    wait "$sink" || true
    pids=()
    sent=$(grep -o 'Actual: [0-9]* packets' "$TMP/tcpreplay.log" | grep -o '[0-9]*' | head -n 1)
    rate=$(grep -o 'Rated: [0-9.]* Bps, [0-9.]* Mbps, [0-9.]* pps' "$TMP/tcpreplay.log" | grep -o '[0-9.]* pps' | cut -d' ' -f1)
    td_recv=$(grep -o '[0-9]* packets received by filter' "$TMP/tcpdump.log" | cut -d' ' -f1)
    td_drop=$(grep -o '[0-9]* packets dropped by kernel' "$TMP/tcpdump.log" | cut -d' ' -f1)
    line=$(grep "collector finished" "$TMP/collector.log" | tail -n 1)
    c_read=$(field "$line" packets_read); c_recv=$(field "$line" pcap_received)
    c_drop=$(field "$line" kernel_dropped); c_sum=$(field "$line" summarised)
    sink_sum=$(grep -o 'summaries=[0-9]*' "$TMP/sink.out" | cut -d= -f2)
    row="| $run | ${sent:-?} | ${rate:-?} | ${td_recv:-?} | ${td_drop:-?} | $td_cpu | ${c_recv:-?} | ${c_read:-?} | ${c_drop:-?} | $c_cpu | ${c_sum:-?} | ${sink_sum:-?} |"
    echo "run $run: $row" >&2
    rows+=("$row")
done

cat <<EOF

=== live capture: tcpreplay --topspeed of $(basename "$CAPTURE") into a veth; tcpdump and tapflow-collector on its peer, same run, -B/--buffer-mb $BUFFER_MB MiB
Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(uname -sr); tcpreplay $(tcpreplay -V 2>&1 | head -n 1 | grep -o '[0-9][0-9.]*' | head -n 1)
Command: bench/live.sh --packets $PACKETS --flows $FLOWS --runs $RUNS --buffer-mb $BUFFER_MB

| run | sent | tcpreplay pps | tcpdump received | tcpdump kernel drops | tcpdump CPU s | collector pcap received | collector read | collector kernel drops | collector CPU s | summarised | null sink summaries |
|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
printf '%s\n' "${rows[@]}"
