#!/usr/bin/env bash
# Live capture past tcpreplay's ceiling: tapflow-blast (a raw AF_PACKET socket sending batches
# with sendmmsg(2), qdisc bypassed, paced per batch) pushes a generated capture's frames into one
# end of a veth pair at a series of rates; on the other end, one at a time at every rate, in the
# same run: tcpdump (-w /dev/null), tapflow-collector with --capture-threads 1, and with 2 (each
# collector sending to tapflow-nullsink, a processor that decodes and discards), all with the same
# kernel buffer. A tool is loss-free at a rate when it delivered every packet sent and the kernel
# dropped none; the table gives, per tool, the highest loss-free rate, and its CPU per packet
# there (the tool's own CPU, user + system; the kernel's copy into the capture rings runs in
# softirq on the sender's CPU and shows in tapflow-blast's system time instead).
# Needs root, iproute2 and tcpdump (and tcpreplay for --generator tcpreplay); everything happens
# in two network namespaces (mix<pid>-tx, mix<pid>-rx) this script makes and removes.
#
# Usage: bench/live.sh [--rates 250000,500000,1000000,1500000,2000000,3000000,0] [--seconds 3]
#                      [--runs 1] [--buffer-mb 64] [--tools tcpdump,t1,t2]
#                      [--packets 1000000] [--flows 40000] [--generator blast|tcpreplay]
#
#   --rates     packets/s to try, ascending; 0: as fast as tapflow-blast sends (one core).
#   --seconds   seconds of traffic at each rate (packets sent = rate x seconds; at 0: 5M packets).
#   --packets, --flows  the capture whose frames are sent (tapflow-gen's bench mix; its first
#               200,000 frames are cycled through).
#   --generator tcpreplay: the old way, tcpreplay --topspeed once per tool (--rates ignored).
set -euo pipefail

PACKETS=1000000
FLOWS=40000
RUNS=1
BUFFER_MB=64
RATES=250000,500000,1000000,1500000,2000000,3000000,0
SECONDS_PER_RATE=3
TOOLS=tcpdump,t1,t2
GENERATOR=blast
while (($#)); do
    case "$1" in
        --packets) PACKETS=${2:?}; shift 2 ;;
        --flows) FLOWS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --buffer-mb) BUFFER_MB=${2:?}; shift 2 ;;
        --rates) RATES=${2:?}; shift 2 ;;
        --seconds) SECONDS_PER_RATE=${2:?}; shift 2 ;;
        --tools) TOOLS=${2:?}; shift 2 ;;
        --generator) GENERATOR=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "live.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "live.sh: needs root" >&2; exit 2; }
case "$GENERATOR" in blast) ;; tcpreplay) RATES=0 ;; *) echo "live.sh: --generator blast|tcpreplay" >&2; exit 2 ;; esac
for t in ip tcpdump; do command -v "$t" >/dev/null || { echo "live.sh: $t missing" >&2; exit 2; }; done
[[ $GENERATOR = blast ]] || command -v tcpreplay >/dev/null || { echo "live.sh: tcpreplay missing" >&2; exit 2; }
IFS=, read -r -a RATE_LIST <<<"$RATES"
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"
for r in "${RATE_LIST[@]}"; do [[ $r =~ ^[0-9]+$ ]] || { echo "live.sh: bad rate $r" >&2; exit 2; }; done
for t in "${TOOL_LIST[@]}"; do [[ $t =~ ^(tcpdump|t1|t2)$ ]] || { echo "live.sh: tools are tcpdump, t1, t2" >&2; exit 2; }; done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
cd "$ROOT"
cargo build --release --quiet --bin tapflow-collector --bin tapflow-gen --bin tapflow-nullsink --bin tapflow-blast
CAPTURE=$ROOT/bench/data/synth-$PACKETS-$FLOWS.pcap
if [[ ! -s $CAPTURE ]]; then
    mkdir -p "$ROOT/bench/data"
    "$BIN/tapflow-gen" --packets "$PACKETS" --flows "$FLOWS" --seed 1 --out "$CAPTURE.part" >&2
    mv "$CAPTURE.part" "$CAPTURE"
fi
cat "$CAPTURE" >/dev/null

p="mix$$"
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
ip -n "$p-tx" link add mixtx0 type veth peer name mixrx0 netns "$p-rx"
# No IPv6 on the pair: no router solicitations or DAD mixed into the counts.
ip netns exec "$p-tx" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 || true
ip netns exec "$p-rx" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 || true
ip -n "$p-tx" link set mixtx0 up
ip -n "$p-rx" link set mixrx0 up

field() { grep -o "$2=[0-9]*" <<<"$1" | head -n 1 | cut -d= -f2; }
# CPU seconds a running process has used, all its threads (utime + stime from /proc).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo "?"; }

# Sends at rate $1 (0: flat out); sets SENT, SENT_PPS, GEN_CPU.
send() {
    local n=$(( $1 > 0 ? $1 * SECONDS_PER_RATE : 5000000 )) out
    if [[ $GENERATOR = blast ]]; then
        out=$(ip netns exec "$p-tx" "$BIN/tapflow-blast" --interface mixtx0 --pcap "$CAPTURE" \
            --packets "$n" --rate "$1")
        SENT=$(field "$out" sent); SENT_PPS=$(grep -o 'pps=[0-9]*' <<<"$out" | cut -d= -f2)
        GEN_CPU=$(grep -o 'cpu_s=[0-9.]*' <<<"$out" | cut -d= -f2)
    else
        out=$(ip netns exec "$p-tx" tcpreplay -i mixtx0 --topspeed "$CAPTURE" 2>&1)
        SENT=$(grep -o 'Actual: [0-9]* packets' <<<"$out" | grep -o '[0-9]*' | head -n 1)
        SENT_PPS=$(grep -o '[0-9.]* pps' <<<"$out" | head -n 1 | cut -d' ' -f1)
        GEN_CPU="?"
    fi
}

wait_for() {  # file pattern
    for _ in $(seq 100); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "live.sh: timed out waiting for '$2' in $1" >&2; return 1
}

# One tool at one rate; sets GOT (packets delivered to the tool), DROP (kernel), CPU, EXTRA.
measure() {  # tool rate
    local tool=$1 rate=$2 pid sink threads line
    : >"$TMP/tool.log"
    if [[ $tool = tcpdump ]]; then
        ip netns exec "$p-rx" tcpdump -i mixrx0 -n -B $((BUFFER_MB * 1024)) -w /dev/null 2>"$TMP/tool.log" &
        pid=$!; pids=("$pid")
        wait_for "$TMP/tool.log" "listening on"
    else
        threads=${tool#t}
        ip netns exec "$p-rx" "$BIN/tapflow-nullsink" --listen tcp://127.0.0.1:5601 --links "$threads" >"$TMP/sink.out" 2>&1 &
        sink=$!
        ip netns exec "$p-rx" "$BIN/tapflow-collector" --interface mixrx0 --buffer-mb "$BUFFER_MB" \
            --capture-threads "$threads" --processor tcp://127.0.0.1:5601 --plain --name live 2>"$TMP/tool.log" &
        pid=$!; pids=("$pid" "$sink")
        wait_for "$TMP/tool.log" "capture open|capture threads"
    fi
    sleep 0.5
    send "$rate"
    sleep 1
    CPU=$(cpu_s "$pid"); EXTRA=""
    if [[ $tool = tcpdump ]]; then
        kill -INT "$pid"; wait "$pid" || true
        GOT=$(grep -o '[0-9]* packets captured' "$TMP/tool.log" | cut -d' ' -f1)
        DROP=$(grep -o '[0-9]* packets dropped by kernel' "$TMP/tool.log" | cut -d' ' -f1)
    else
        EXTRA=$(cpu_s "$sink")
        kill -TERM "$pid"
        wait "$pid" || { echo "live.sh: the collector failed: $(tail -n 5 "$TMP/tool.log")" >&2; exit 1; }
        wait "$sink" || true
        line=$(grep "collector finished" "$TMP/tool.log" | tail -n 1)
        GOT=$(field "$line" packets_read); DROP=$(field "$line" kernel_dropped)
        local ifd; ifd=$(field "$line" if_dropped); DROP=$(( ${DROP:-0} + ${ifd:-0} ))
    fi
    pids=()
}

declare -A OK CPUPP ACHIEVED
rows=()
for run in $(seq "$RUNS"); do
    for rate in "${RATE_LIST[@]}"; do
        for tool in "${TOOL_LIST[@]}"; do
            measure "$tool" "$rate"
            lost=$(( SENT - ${GOT:-0} )); (( lost >= 0 )) || lost=0
            free=no; (( lost == 0 && ${DROP:-1} == 0 )) && free=yes
            ns=$(awk -v c="$CPU" -v n="${GOT:-0}" 'BEGIN{ if (n > 0 && c != "?") printf "%.0f", c * 1e9 / n; else print "?" }')
            key="$tool/$rate"
            # Loss-free at a rate means loss-free in every run.
            [[ ${OK[$key]-yes} = yes && $free = yes ]] && OK[$key]=yes || OK[$key]=no
            CPUPP[$key]="${CPUPP[$key]-} $ns"
            ACHIEVED[$key]="${ACHIEVED[$key]-} ${SENT_PPS:-?}"
            label=$tool; [[ $tool = tcpdump ]] || label="collector ${tool#t}T"
            row="| $run | ${rate/#0/max} | $label | $SENT | $SENT_PPS | $GEN_CPU | ${GOT:-?} | ${DROP:-?} | $lost | $free | $CPU | $ns | ${EXTRA:--} |"
            echo "$row" >&2
            rows+=("$row")
        done
    done
done

median() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {if (!NR) print "?"; else print a[int((NR+1)/2)]}'; }
echo
echo "=== live capture: $GENERATOR into a veth; each tool alone at each rate, same run; buffer $BUFFER_MB MiB"
echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Command: bench/live.sh --rates $RATES --seconds $SECONDS_PER_RATE --runs $RUNS --buffer-mb $BUFFER_MB --tools $TOOLS --packets $PACKETS --flows $FLOWS --generator $GENERATOR"
echo
echo "| run | rate asked | tool | sent | sent pps | sender CPU s | delivered | kernel drops | lost | loss-free | tool CPU s | tool CPU ns/packet | null sink CPU s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "| tool | highest loss-free rate asked, below the first with a loss (packets/s) | rate sent there (median packets/s) | tool CPU ns/packet there (median) |"
echo "|---|---|---|---|"
for tool in "${TOOL_LIST[@]}"; do
    best=none; ns="-"; got="-"
    for rate in "${RATE_LIST[@]}"; do
        if [[ ${OK[$tool/$rate]} = yes ]]; then
            best=$rate; [[ $rate = 0 ]] && best="max (flat out)"
            # shellcheck disable=SC2086 # a space-separated list on purpose
            ns=$(median ${CPUPP[$tool/$rate]})
            # shellcheck disable=SC2086
            got=$(median ${ACHIEVED[$tool/$rate]})
        else
            break  # the highest rate below the first one with a loss
        fi
    done
    label=$tool; [[ $tool = tcpdump ]] || label="tapflow-collector --capture-threads ${tool#t}"
    echo "| $label | $best | $got | $ns |"
done
