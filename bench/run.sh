#!/usr/bin/env bash
# tapflow throughput harness: tapflow against its peers on the same synthetic capture, every tool
# once per run, run after run in one invocation so all see the same machine state:
#   tcpdump -r F -w /dev/null (libpcap's read limit), argus -r F -w /dev/null, tapflow-refcount
#   (one Rust process: libpcap + etherparse + a HashMap of five-tuples), tshark -r P -q -z conv,tcp
#   and nfstream (bench/peers/nfstream-flows.py) on a smaller capture P of --peer-packets packets
#   (they read ~70-120k packets/s), then the tapflow pipeline as real processes on loopback
#   (collector -> N processors -> aggregator writing --conn-log) with 1 and 2 processors, and with
#   2 processors writing to a throwaway InfluxDB when influxd is installed.
#
# Usage: bench/run.sh [--mix bench|session-heavy|flood-heavy|all] [--packets 5000000]
#                     [--flows F] [--runs 3] [--seed 1] [--peer-packets 2000000] [--timeout 900]
#                     [--install-peers] [--no-influx] [--no-pipeline]
#
#   --mix M           tapflow-gen's traffic mix (default bench): bench (one session per 25
#                     packets), session-heavy (one per six), flood-heavy (a spoofed SYN flood of
#                     24% of the packets: more than one packet in four opens a session), or all:
#                     the three in turn (each with its peers in its own runs), then one table of
#                     the three against issue 19's targets.
#   --flows F         five-tuples (default: the mix's, e.g. 200,000 of 5M packets for bench).
#   --peer-packets N  packets of the smaller capture for tshark and nfstream (0: the whole
#                     capture; the default keeps each under ~30 s). tapflow-gen makes it with the
#                     same seed and flows/packets ratio, so the mix is the same; their rates are
#                     over N packets.
#   --install-peers   run bench/install-peers.sh first (apt: argus-server, tshark; pip: nfstream).
#                     Without it nothing is installed: a peer that is missing is skipped, saying so.
#   --no-influx       skip the InfluxDB run (it runs whenever influxd is installed).
#   --no-pipeline     peers only.
#
# Prints per-run times, then medians: packets/s of every tool, tapflow's per-stage rates, CPU
# seconds and peak RSS per process, bytes on the wire per packet (as the collector and the
# processors count what they hand to ZeroMQ), the accounting check, tapflow
# (2 processors, end to end) against each peer beside the issue's targets, and a markdown block
# for bench/RESULTS.md (nothing is appended automatically). A run whose accounting does not
# reconcile, or that dropped anything, fails loudly. Captures are generated into bench/data/
# (git-ignored) when missing.
set -euo pipefail

PACKETS=5000000
FLOWS=
MIX=bench
ARGS=("$@")
RUNS=3
SEED=1
LIMIT=900
PIPELINE=1
PEER_PACKETS=2000000
INSTALL_PEERS=0
INFLUX=1

usage() { sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "run.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --packets) PACKETS=${2:?}; shift 2 ;;
        --flows) FLOWS=${2:?}; shift 2 ;;
        --mix) MIX=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --seed) SEED=${2:?}; shift 2 ;;
        --timeout) LIMIT=${2:?}; shift 2 ;;
        --peer-packets) PEER_PACKETS=${2:?}; shift 2 ;;
        --install-peers) INSTALL_PEERS=1; shift ;;
        --no-influx) INFLUX=0; shift ;;
        --no-pipeline) PIPELINE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
case "$MIX" in
    bench|session-heavy|flood-heavy|all) ;;
    *) die "--mix: bench, session-heavy, flood-heavy or all, not $MIX" ;;
esac
if [ "$MIX" = all ]; then
    # Each mix in turn, as its own invocation (peers and tapflow alternate within it), then the
    # three SUMMARY lines side by side.
    SUMS=()
    rest=()
    i=0
    while [ "$i" -lt "${#ARGS[@]}" ]; do
        case "${ARGS[$i]}" in
            --mix|--flows) i=$((i + 2)) ;;
            *) rest+=("${ARGS[$i]}"); i=$((i + 1)) ;;
        esac
    done
    for m in bench session-heavy flood-heavy; do
        out=$("$0" --mix "$m" "${rest[@]+"${rest[@]}"}") || die "the $m run failed"
        printf '%s\n' "$out"
        SUMS+=("$(grep '^SUMMARY ' <<<"$out" | tail -n 1)")
    done
    echo
    echo "=== issue 19: tapflow (2 processors writing the conn log, end to end) on the three mixes, medians"
    printf '%s\n' "${SUMS[@]}" | "${PYTHON:-python3}" -c '
import sys
rows = [dict(kv.split("=", 1) for kv in l.split()[1:]) for l in sys.stdin if l.strip()]
cols = ["mix", "packets", "sessions", "tcpdump_pps", "argus_pps", "tapflow_pps", "pct_tcpdump",
        "target_pct", "x_argus", "target_x", "agg_us_per_record", "proc_us_per_record", "verdict"]
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join(r.get(c, "n/a") for c in cols) + " |")
'
    exit 0
fi
[ -n "$FLOWS" ] || case "$MIX" in
    bench) FLOWS=$(( PACKETS / 25 )) ;;
    session-heavy) FLOWS=$(( PACKETS / 6 )) ;;
    # tapflow-gen's Mix::default_flows: the flood's SYNs (24%, at most 2^24) + a 25th of the rest.
    flood-heavy) f=$(( PACKETS * 24 / 100 )); [ "$f" -le 16777216 ] || f=16777216
                 FLOWS=$(( f + (PACKETS - f) / 25 )) ;;
esac
[ "$FLOWS" -ge 1 ] 2>/dev/null || FLOWS=1
for v in "$PACKETS" "$FLOWS" "$RUNS" "$SEED" "$LIMIT" "$PEER_PACKETS"; do
    [[ "$v" =~ ^[0-9]+$ ]] || die "not a number: $v"
done
[ "$RUNS" -ge 1 ] || die "--runs must be at least 1"
{ [ "$PEER_PACKETS" = 0 ] || [ "$PEER_PACKETS" -gt "$PACKETS" ]; } && PEER_PACKETS=$PACKETS

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
DATA="$ROOT/bench/data"
PROCIO="$ROOT/bench/procio.py"
capture_name() {  # packets flows
    local n="synth-$1-$2"
    [ "$MIX" = bench ] || n="$MIX-$1-$2"
    [ "$SEED" = 1 ] || n="$n-s$SEED"
    echo "$n"
}
NAME=$(capture_name "$PACKETS" "$FLOWS")
CAPTURE="$DATA/$NAME.pcap"
PEER_FLOWS=$(( PEER_PACKETS * FLOWS / PACKETS ))
[ "$PEER_FLOWS" -ge 1 ] || PEER_FLOWS=1
PEER_NAME=$(capture_name "$PEER_PACKETS" "$PEER_FLOWS")
PEER_CAPTURE="$DATA/$PEER_NAME.pcap"
COMMAND="bench/run.sh --mix $MIX --packets $PACKETS --flows $FLOWS --runs $RUNS --peer-packets $PEER_PACKETS"
[ "$SEED" = 1 ] || COMMAND="$COMMAND --seed $SEED"
[ "$INSTALL_PEERS" = 0 ] || COMMAND="$COMMAND --install-peers"
[ "$INFLUX" = 1 ] || COMMAND="$COMMAND --no-influx"
[ "$PIPELINE" = 1 ] || COMMAND="$COMMAND --no-pipeline"

# ---------------------------------------------------------------- tools, build, captures
cd "$ROOT"
command -v python3 >/dev/null 2>&1 || die "python3 is needed (bench/procio.py measures every process)"
# The interpreter itself, not a version manager's shim: its start-up is part of nfstream's time.
PY=$(python3 -c 'import sys; print(sys.executable)')
[ "$INSTALL_PEERS" = 0 ] || "$ROOT/bench/install-peers.sh" >&2 || die "bench/install-peers.sh failed"

if [ "$PIPELINE" = 1 ]; then
    echo "== cargo build --release --workspace" >&2
    cargo build --release --workspace >&2 \
        || die "cargo build --release --workspace failed: build tapflow first (or use --no-pipeline)"
    for b in tapflow-aggregator tapflow-processor tapflow-collector; do
        [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build tapflow first"
    done
    # The placeholders exit at once; the real binaries know the pipeline's flags.
    "$BIN/tapflow-aggregator" --help 2>&1 | grep -q -- '--exit-on-eos' \
        || die "tapflow-aggregator does not accept --exit-on-eos yet: build tapflow first"
    "$BIN/tapflow-processor" --help 2>&1 | grep -q -- '--exit-on-eos' \
        || die "tapflow-processor does not accept --exit-on-eos yet: build tapflow first"
    "$BIN/tapflow-collector" --help 2>&1 | grep -q -- '--pcap' \
        || die "tapflow-collector does not accept --pcap yet: build tapflow first"
else
    echo "== cargo build --release -p tapflow-bench" >&2
    cargo build --release -p tapflow-bench >&2 || die "building tapflow-gen and tapflow-refcount failed"
fi

have() { command -v "$1" >/dev/null 2>&1; }
HAVE_TCPDUMP=0; HAVE_ARGUS=0; HAVE_TSHARK=0; HAVE_NFSTREAM=0; HAVE_INFLUXD=0
if have tcpdump; then HAVE_TCPDUMP=1; else
    echo "run.sh: tcpdump not installed: skipping the libpcap baseline (deploy/install-deps.sh installs it)" >&2
fi
if have argus; then HAVE_ARGUS=1; else
    echo "run.sh: argus not installed: skipping it (bench/run.sh --install-peers installs argus-server)" >&2
fi
if have tshark; then HAVE_TSHARK=1; else
    echo "run.sh: tshark not installed: skipping it (bench/run.sh --install-peers installs it)" >&2
fi
if "$PY" -c 'import nfstream' >/dev/null 2>&1; then HAVE_NFSTREAM=1; else
    echo "run.sh: nfstream not importable by $PY: skipping it (bench/run.sh --install-peers installs it)" >&2
fi
if [ "$INFLUX" = 1 ] && [ "$PIPELINE" = 1 ]; then
    if have influxd && have curl; then HAVE_INFLUXD=1; else
        echo "run.sh: influxd or curl not installed: skipping the InfluxDB run (deploy/install-deps.sh installs them)" >&2
    fi
fi
SLOW_PEERS=$(( HAVE_TSHARK + HAVE_NFSTREAM ))

generate() {  # packets flows file
    [ -s "$3" ] && return 0
    mkdir -p "$DATA"
    echo "== generating $3" >&2
    "$BIN/tapflow-gen" --mix "$MIX" --packets "$1" --flows "$2" --seed "$SEED" --out "$3.part" >&2
    mv "$3.part" "$3"
}
generate "$PACKETS" "$FLOWS" "$CAPTURE"
[ "$SLOW_PEERS" = 0 ] || generate "$PEER_PACKETS" "$PEER_FLOWS" "$PEER_CAPTURE"
BYTES=$(stat -c %s "$CAPTURE")
echo "== warming the page cache with $CAPTURE ($BYTES bytes)" >&2
cat "$CAPTURE" > /dev/null
[ "$SLOW_PEERS" = 0 ] || cat "$PEER_CAPTURE" > /dev/null

# ---------------------------------------------------------------- helpers
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tapflow-bench.XXXXXX")
PIDS=()
KEEP_TMP=0
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop "$p"; done
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP_TMP" = 0 ]; then rm -rf "$TMP"; else echo "run.sh: logs kept in $TMP" >&2; fi
}
trap cleanup EXIT

HAVE_TIME=0
if [ -x /usr/bin/time ] && /usr/bin/time -f '%M' -o /dev/null true 2>/dev/null; then HAVE_TIME=1; fi

# Runs "$@" in the background as bench/procio.py -> timeout -> GNU time -> the program:
# - procio.py writes $1.io: wall clock at start and at exit (ns) and CPU seconds;
# - timeout sends TERM after --timeout seconds (KILL 10 s later) to its process group;
# - GNU time writes the program's peak RSS (KB) to $1.rss. It is forked by timeout, a small C
#   program, so no parent's pages inflate the figure (a child of Python would start at ~14 MB).
# stdout and stderr go to $1.log. Sets LAST_PID: the procio.py process.
spawn() {
    local tag=$1; shift
    local cmd=(timeout -k 10 "$LIMIT")
    [ "$HAVE_TIME" = 0 ] || cmd+=(/usr/bin/time -f '%M' -o "$tag.rss")
    "$PY" "$PROCIO" "$tag.io" "${cmd[@]}" "$@" >"$tag.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Asks a spawned process to stop: TERM to the program at the bottom of procio.py -> timeout ->
# time -> program, so that GNU time lives on to report its RSS (TERM to timeout's process group
# would end time too). A program that ignores TERM is killed when --timeout runs out.
stop() {
    local p=$1 c
    while c=$(ps -o pid= --ppid "$p" 2>/dev/null | head -n 1 | tr -d ' ') && [ -n "$c" ]; do p=$c; done
    kill "$p" 2>/dev/null || true
}

# Waits for a spawned process; sets RC to its exit status and forgets its pid.
reap() {
    local p keep=()
    RC=0; wait "$1" || RC=$?
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

# Field $2 of $1.io (1 start_ns, 2 end_ns, 3 user_s, 4 sys_s).
io() { if [ -s "$1.io" ]; then awk -v i="$2" '{print $i}' "$1.io"; else echo n/a; fi; }
cpu_of() { if [ -s "$1.io" ]; then awk '{printf "%.2f", $3 + $4}' "$1.io"; else echo n/a; fi; }
rss_of() { if [ -s "$1.rss" ]; then tail -n 1 "$1.rss"; else echo n/a; fi; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", (b - a) / 1e9}'; }  # ns start, ns end

fail_run() {
    KEEP_TMP=1
    echo "run.sh: $1" >&2
    local f
    for f in "$2"/*.log; do
        [ -e "$f" ] || continue
        echo "---- $(basename "$f") (last 20 lines)" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

# A loopback TCP port nobody uses now, not in the list given.
free_port() {
    local p used
    if command -v ss >/dev/null 2>&1; then
        used=$(ss -Htan | awk '{print $4}' | sed 's/.*://' | sort -u)
        while :; do
            p=$((20000 + RANDOM % 40000))
            grep -qx "$p" <<<"$used" && continue
            case " $* " in *" $p "*) continue ;; esac
            echo "$p"; return
        done
    else
        "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    fi
}

# Waits until every given port listens on loopback (up to 10 s), or a process given by pid dies.
wait_listening() {
    local deadline=$(( $(date +%s) + 10 )) p ok pid
    local pids=$1; shift
    if ! command -v ss >/dev/null 2>&1; then sleep 1; return 0; fi
    while :; do
        ok=1
        for p in "$@"; do
            ss -Htln "sport = :$p" 2>/dev/null | grep -q . || ok=0
        done
        [ "$ok" = 1 ] && return 0
        for pid in $pids; do kill -0 "$pid" 2>/dev/null || return 1; done
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# Figures per run, by name: V[name] is a space-separated list, one value per run.
declare -A V
add() { V[$1]="${V[$1]-} $2"; }

# Runs one peer to completion: peer TAG RUN_DIR COMMAND...; records its wall time and RSS.
peer() {
    local tag=$1 d=$2; shift 2
    spawn "$d/$tag" "$@"
    reap "$LAST_PID"
    [ "$RC" = 0 ] || fail_run "$tag exited with $RC (run $run; 124 or 137: --timeout reached)" "$d"
    add "t_$tag" "$(secs "$(io "$d/$tag" 1)" "$(io "$d/$tag" 2)")"
    add "rss_$tag" "$(rss_of "$d/$tag")"
    add "cpu_$tag" "$(cpu_of "$d/$tag")"
    echo "run $run: $tag $(secs "$(io "$d/$tag" 1)" "$(io "$d/$tag" 2)") s" >&2
}

# Reads the aggregator's accounting report (last line of health.jsonl) and checks it: prints
# shell assignments H_*; H_WHY is set when the run lost or mislaid anything.
check_health() {  # health.jsonl expected_packets influx(0|1)
    "$PY" - "$@" <<'PY'
import json, shlex, sys
path, expected, influx = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
why = []
try:
    with open(path) as f:
        r = json.loads(f.read().splitlines()[-1])
except (OSError, ValueError, IndexError) as e:
    r = {}
    why.append(f"no accounting report in {path}: {e}")
cs = r.get("collectors", [])
read = sum(c.get("packets_read", 0) for c in cs)
summarised = sum(c.get("packets_summarised", 0) for c in cs)
merged = sum(c.get("fragments_merged", 0) for c in cs)
drops = sum(sum(c.get("drops", {}).values()) for c in cs)
links = [l for c in cs for l in c.get("links", [])]
gaps = sum(l.get("gaps", 0) for l in links)
processed = sum(p.get("counters", {}).get("summaries_processed", 0) for p in r.get("processors", []))
records = r.get("conns", {}).get("released", 0)
ix = r.get("influx") or {}
if r and r.get("reconciled") is not True:
    why.append("reconciled is not true")
if drops:
    why.append(f"{drops} packets dropped in an offline run: {[c.get('drops') for c in cs]}")
if gaps:
    why.append(f"{gaps} summaries lost between collector and processors")
if r and read != expected:
    why.append(f"packets_read {read} != {expected} packets in the capture")
if read != summarised + merged + drops:
    why.append(f"packets_read {read} != summarised {summarised} + merged {merged} + drops {drops}")
if influx:
    left = sum(ix.get(k, 0) for k in ("points_rejected", "points_dropped_spool_full",
                                        "points_in_spool", "points_pending"))
    if not ix or left or ix.get("points_written") != ix.get("points_sent"):
        why.append(f"InfluxDB did not get every point: {json.dumps(ix)[:400]}")
out = dict(H_READ=read, H_SUMMARISED=summarised, H_MERGED=merged, H_DROPS=drops, H_GAPS=gaps,
           H_PROCESSED=processed, H_RECORDS=records, H_POINTS=ix.get("points_written", "n/a"),
           H_WHY="; ".join(why))
for k, v in out.items():
    print(f"{k}={shlex.quote(str(v))}")
PY
}

# Bytes on the wire, as the binaries count them: the collector logs what it handed to ZeroMQ
# ("sent to processors ... bytes=N": frames of every message, heartbeats included; ZMTP adds a
# few bytes per message), each processor reports conn_bytes_sent (its connection-record messages
# to the aggregator) in the accounting report.
collector_bytes() {  # dir
    sed -n 's/.*sent to processors.* bytes=\([0-9]*\).*/\1/p' "$1/collector.log" | tail -n 1
}
upstream_bytes() {  # health.jsonl
    python3 -c 'import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
print(sum(p["counters"].get("conn_bytes_sent", 0) for p in r["processors"]))' "$1"
}

# A throwaway InfluxDB 1.x (as deploy/quickstart.sh starts it): everything under $1, loopback
# only. Sets INFLUX_PID and INFLUX_URL.
start_influxd() {
    local dir=$1 http rpc
    http=$(free_port); rpc=$(free_port "$http")
    # shellcheck source=../deploy/lib/influxd.sh
    source "$ROOT/deploy/lib/influxd.sh"
    influxd_conf "$dir" "$http" "$rpc"
    spawn "$dir/../influxd" influxd -config "$dir/influxdb.conf"
    INFLUX_PID=$LAST_PID
    INFLUX_URL="http://127.0.0.1:$http"
    local i
    for i in $(seq 200); do
        curl -fs "$INFLUX_URL/ping" >/dev/null 2>&1 && return 0
        kill -0 "$INFLUX_PID" 2>/dev/null || break
        sleep 0.05
    done
    return 1
}

# One tapflow pipeline run: tapflow CONFIG_KEY PROCESSORS INFLUX(0|1) RUN_DIR.
# Figures go to V[<key>_<figure>].
tapflow() {
    local key=$1 n=$2 influx=$3 d=$4 i p pa ports=() pids=() procs=() agg_args=()
    mkdir -p "$d"
    if [ "$influx" = 1 ]; then
        start_influxd "$d/influx" || fail_run "influxd did not start (run $run)" "$d"
        agg_args=(--influx-url "$INFLUX_URL" --influx-db tapflow --influx-spool-dir "$d/spool")
    fi
    pa=$(free_port)
    for ((i = 0; i < n; i++)); do ports+=("$(free_port "$pa" "${ports[@]+"${ports[@]}"}")"); done
    # Loopback only: plain links (--plain), as a single-host deployment would run them.
    spawn "$d/aggregator" "$BIN/tapflow-aggregator" --plain --listen "tcp://127.0.0.1:$pa" --processors "$n" \
        --exit-on-eos --health-log "$d/health.jsonl" --conn-log "$d/conn.jsonl" \
        "${agg_args[@]+"${agg_args[@]}"}"
    local agg=$LAST_PID
    for ((i = 0; i < n; i++)); do
        spawn "$d/processor$i" "$BIN/tapflow-processor" --plain --listen "tcp://127.0.0.1:${ports[$i]}" \
            --aggregator "tcp://127.0.0.1:$pa" --collectors 1 --exit-on-eos
        pids+=("$LAST_PID")
        procs+=(--processor "tcp://127.0.0.1:${ports[$i]}")
    done
    wait_listening "$agg ${pids[*]}" "$pa" "${ports[@]}" \
        || fail_run "the aggregator or a processor did not start listening (run $run, $key)" "$d"

    spawn "$d/collector" "$BIN/tapflow-collector" --plain --pcap "$CAPTURE" "${procs[@]}"
    reap "$LAST_PID"
    [ "$RC" = 0 ] || fail_run "tapflow-collector exited with $RC (run $run, $key; 124 or 137: --timeout reached)" "$d"
    reap "$agg"
    [ "$RC" = 0 ] || fail_run "tapflow-aggregator exited with $RC (run $run, $key; 124 or 137: --timeout reached)" "$d"
    for p in "${pids[@]}"; do
        reap "$p"
        [ "$RC" = 0 ] || fail_run "a tapflow-processor exited with $RC (run $run, $key; 124 or 137: --timeout reached)" "$d"
    done
    if [ "$influx" = 1 ]; then
        stop "$INFLUX_PID"; reap "$INFLUX_PID"
        add "${key}_rss_influxd" "$(rss_of "$d/influxd")"
        add "${key}_cpu_influxd" "$(cpu_of "$d/influxd")"
    fi

    local H_READ=n/a H_SUMMARISED=n/a H_MERGED=n/a H_DROPS=n/a H_GAPS=n/a H_PROCESSED=n/a
    local H_RECORDS=n/a H_POINTS=n/a H_WHY="the accounting check could not run"
    eval "$(check_health "$d/health.jsonl" "$PACKETS" "$influx")"
    [ -z "$H_WHY" ] || fail_run "accounting check failed (run $run, $key): $H_WHY" "$d"

    local t0 tc ta tp=0 e cpu_p=0 rss_p=0 x
    t0=$(io "$d/collector" 1); tc=$(io "$d/collector" 2); ta=$(io "$d/aggregator" 2)
    for ((i = 0; i < n; i++)); do
        e=$(io "$d/processor$i" 2); [ "$e" -gt "$tp" ] && tp=$e
        cpu_p=$(awk -v a="$cpu_p" -v b="$(cpu_of "$d/processor$i")" 'BEGIN{printf "%.2f", a + b}')
        x=$(rss_of "$d/processor$i"); [[ "$x" =~ ^[0-9]+$ ]] && [ "$x" -gt "$rss_p" ] && rss_p=$x
    done
    add "${key}_e2e" "$(secs "$t0" "$ta")"
    add "${key}_coll" "$(secs "$t0" "$tc")"
    add "${key}_proc" "$(secs "$t0" "$tp")"
    add "${key}_tail" "$(secs "$tp" "$ta")"
    add "${key}_summaries" "$H_PROCESSED"
    add "${key}_records" "$H_RECORDS"
    add "${key}_cpu_coll" "$(cpu_of "$d/collector")"
    add "${key}_cpu_proc" "$cpu_p"
    add "${key}_cpu_agg" "$(cpu_of "$d/aggregator")"
    add "${key}_rss_coll" "$(rss_of "$d/collector")"
    add "${key}_rss_proc" "$rss_p"
    add "${key}_rss_agg" "$(rss_of "$d/aggregator")"
    x=$(collector_bytes "$d")
    if [ -n "$x" ]; then
        add "${key}_wire_pkt" "$(awk -v b="$x" -v p="$H_READ" 'BEGIN{printf "%.2f", b / p}')"
        add "${key}_wire_sum" "$(awk -v b="$x" -v s="$H_PROCESSED" 'BEGIN{printf "%.2f", b / s}')"
    fi
    x=$(upstream_bytes "$d/health.jsonl")
    add "${key}_wire_up" "$(awk -v b="$x" -v r="$H_RECORDS" 'BEGIN{printf "%.1f", b / r}')"
    [ "$influx" = 0 ] || add "${key}_points" "$H_POINTS"
    tail -n 1 "$d/health.jsonl" >"$TMP/$key.health"
    echo "run $run: tapflow $key: collector $(secs "$t0" "$tc") s, processors done $(secs "$t0" "$tp") s," \
        "aggregator done $(secs "$t0" "$ta") s; $H_READ packets read = $H_SUMMARISED summarised" \
        "+ $H_MERGED merged + $H_DROPS dropped; $H_RECORDS records" >&2
}

# ---------------------------------------------------------------- the runs
PIPE_KEYS=()
if [ "$PIPELINE" = 1 ]; then
    PIPE_KEYS=(p1 p2)
    [ "$HAVE_INFLUXD" = 0 ] || PIPE_KEYS+=(p2influx)
fi
for run in $(seq 1 "$RUNS"); do
    D="$TMP/run$run"; mkdir -p "$D"
    [ "$HAVE_TCPDUMP" = 0 ] || peer tcpdump "$D" tcpdump -r "$CAPTURE" -w /dev/null
    [ "$HAVE_ARGUS" = 0 ] || peer argus "$D" argus -r "$CAPTURE" -w /dev/null
    peer refcount "$D" "$BIN/tapflow-refcount" --pcap "$CAPTURE"
    grep -q "^tapflow-refcount: $PACKETS packets" "$D/refcount.log" \
        || fail_run "tapflow-refcount did not read $PACKETS packets" "$D"
    [ "$HAVE_TSHARK" = 0 ] || peer tshark "$D" tshark -r "$PEER_CAPTURE" -q -z conv,tcp
    [ "$HAVE_NFSTREAM" = 0 ] || peer nfstream "$D" "$PY" "$ROOT/bench/peers/nfstream-flows.py" "$PEER_CAPTURE"
    [ "$PIPELINE" = 1 ] || continue
    tapflow p1 1 0 "$D/p1"
    tapflow p2 2 0 "$D/p2"
    [ "$HAVE_INFLUXD" = 0 ] || tapflow p2influx 2 1 "$D/p2influx"
done

# ---------------------------------------------------------------- report
med() {  # median of V[$1]; n/a if none
    # shellcheck disable=SC2086 # the list is space-separated on purpose
    printf '%s\n' ${V[$1]-} | { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{a[NR]=$1} END {
        if (NR == 0) { print "n/a"; exit }
        m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; print m }'
}
peak() {  # the largest of V[$1] (KB), in MB; n/a if none
    # shellcheck disable=SC2086
    printf '%s\n' ${V[$1]-} | { grep -E '^[0-9]+$' || true; } | sort -n | tail -n 1 \
        | awk '{printf "%.0f MB", $1/1024} END {if (NR==0) print "n/a"}'
}
na() { for a in "$@"; do [ "$a" = n/a ] && return 0; done; return 1; }
rate() { if na "$1" "$2"; then echo n/a; else awk -v n="$1" -v s="$2" 'BEGIN{printf "%.0f", n/s}'; fi; }
group() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
fmt_pps() { if [ "$1" = n/a ]; then echo n/a; else group "$1"; fi; }
fmt_s() { if [ "$1" = n/a ]; then echo n/a; else printf '%.2f s' "$1"; fi; }
fmt_1() { if [ "$1" = n/a ]; then echo n/a; else printf '%.1f' "$1"; fi; }
ratio() {  # a b format -> a/b
    if na "$1" "$2"; then echo n/a; else awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN{printf f, a/b}'; fi
}
verdict() {  # value target
    if na "$1"; then echo "n/a"; else awk -v v="$1" -v t="$2" 'BEGIN{print (v >= t) ? "met" : "NOT met"}'; fi
}

declare -A PPS
for t in tcpdump argus refcount; do PPS[$t]=$(rate "$PACKETS" "$(med "t_$t")"); done
for t in tshark nfstream; do PPS[$t]=$(rate "$PEER_PACKETS" "$(med "t_$t")"); done
for k in "${PIPE_KEYS[@]+"${PIPE_KEYS[@]}"}"; do
    PPS[$k]=$(rate "$PACKETS" "$(med "${k}_e2e")")
    PPS[${k}_coll]=$(rate "$PACKETS" "$(med "${k}_coll")")
    PPS[${k}_proc]=$(rate "$(med "${k}_summaries")" "$(med "${k}_proc")")
    PPS[${k}_agg]=$(rate "$(med "${k}_records")" "$(med "${k}_tail")")
done
E2E=${PPS[p2]-n/a}
X_ARGUS=$(ratio "$E2E" "${PPS[argus]}" '%.2f'); X_NFSTREAM=$(ratio "$E2E" "${PPS[nfstream]}" '%.1f')
X_TSHARK=$(ratio "$E2E" "${PPS[tshark]}" '%.1f')
PCT_TCPDUMP=$(ratio "$E2E" "${PPS[tcpdump]}" '%.3f'); PCT_REFCOUNT=$(ratio "$E2E" "${PPS[refcount]}" '%.3f')
pct() { if [ "$1" = n/a ]; then echo n/a; else awk -v v="$1" 'BEGIN{printf "%.0f%%", v*100}'; fi; }
COLL_TCPDUMP=$(ratio "${PPS[p2_coll]-n/a}" "${PPS[tcpdump]}" '%.2f')
# Issue 19's targets by mix: share of tcpdump's read rate and ratio to argus, 2 processors.
case "$MIX" in
    bench) T_PCT=0.75; T_X=3.5 ;;
    session-heavy) T_PCT=0.55; T_X=3 ;;
    *) T_PCT=0.45; T_X=3 ;;
esac
us_per() {  # cpu_seconds records -> microseconds per record
    if na "$1" "$2" || [ "$2" = 0 ]; then echo n/a; else awk -v c="$1" -v r="$2" 'BEGIN{printf "%.2f", c * 1e6 / r}'; fi
}
AGG_US=$(us_per "$(med p2_cpu_agg)" "$(med p2_records)")
PROC_US=$(us_per "$(med p2_cpu_proc)" "$(med p2_records)")
V19="$(verdict "$PCT_TCPDUMP" "$T_PCT")/$(verdict "$X_ARGUS" "$T_X")"
[ "$MIX" != flood-heavy ] || V19="$V19/$(if na "$AGG_US"; then echo n/a; else awk -v u="$AGG_US" 'BEGIN{print (u <= 1) ? "met" : "NOT met"}'; fi)"
V19=${V19// /_}  # one word on the SUMMARY line

CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
MEM=$(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT-dirty"
DATE=$(date -u +%Y-%m-%d)
MB=$(awk -v b="$BYTES" 'BEGIN{printf "%.0f", b/1048576}')
PN=$(group "$PEER_PACKETS")
PEER_NOTE="the smaller capture $PEER_NAME, $PN packets"
[ "$PEER_PACKETS" != "$PACKETS" ] || PEER_NOTE="whole capture"
ver() {  # the first line a tool prints about its version, or "not installed"
    have "$1" || { echo "not installed"; return 0; }
    "$@" 2>&1 | { grep -v '^Running as user' || true; } | head -n 1
}

line() {  # label tag packets-label
    printf '%-44s %9s  %10s packets/s  CPU %6s s  peak RSS %s\n' "$1" "$(fmt_s "$(med "t_$2")")" \
        "$(fmt_pps "${PPS[$2]}")" "$(med "cpu_$2")" "$(peak "rss_$2")"
}
skipped() { printf '%-44s skipped: not installed\n' "$1"; }
has() { [ -n "${V[t_$1]-}" ]; }

{
echo
echo "=== $NAME: $(group "$PACKETS") packets, $(group "$FLOWS") flows, $MB MiB; median of $RUNS runs"
echo "--- peers (wall time from exec to exit)"
if has tcpdump; then line "tcpdump -r F -w /dev/null" tcpdump; else skipped tcpdump; fi
if has argus; then line "argus -r F -w /dev/null" argus; else skipped argus; fi
line "tapflow-refcount (libpcap+etherparse+HashMap)" refcount
if has tshark; then line "tshark -r P -q -z conv,tcp (P: $PN pkts)" tshark; else skipped tshark; fi
if has nfstream; then line "nfstream flows, Python (P: $PN pkts)" nfstream; else skipped nfstream; fi
for k in "${PIPE_KEYS[@]+"${PIPE_KEYS[@]}"}"; do
    case $k in p1) label="1 processor" ;; p2) label="2 processors" ;; *) label="2 processors + InfluxDB" ;; esac
    echo "--- tapflow, $label (clock starts when the collector is started)"
    printf '  end to end (to aggregator exit)   %9s  %10s packets/s\n' "$(fmt_s "$(med "${k}_e2e")")" "$(fmt_pps "${PPS[$k]}")"
    printf '  collector (start to exit)         %9s  %10s packets/s    CPU %s s  peak RSS %s\n' \
        "$(fmt_s "$(med "${k}_coll")")" "$(fmt_pps "${PPS[${k}_coll]}")" "$(med "${k}_cpu_coll")" "$(peak "${k}_rss_coll")"
    printf '  processors (to the last exit)     %9s  %10s summaries/s  CPU %s s (all)  peak RSS %s (largest)\n' \
        "$(fmt_s "$(med "${k}_proc")")" "$(fmt_pps "${PPS[${k}_proc]}")" "$(med "${k}_cpu_proc")" "$(peak "${k}_rss_proc")"
    printf '  aggregator (after the last proc.) %9s  %10s records/s    CPU %s s  peak RSS %s  (%s records)\n' \
        "$(fmt_s "$(med "${k}_tail")")" "$(fmt_pps "${PPS[${k}_agg]}")" "$(med "${k}_cpu_agg")" "$(peak "${k}_rss_agg")" \
        "$(group "$(med "${k}_records")")"
    printf '  wire, collector -> processors     %s B/packet (%s B/summary)\n' \
        "$(fmt_1 "$(med "${k}_wire_pkt")")" "$(fmt_1 "$(med "${k}_wire_sum")")"
    printf '  wire, processors -> aggregator    %s B/conn record (record messages with their traffic partials)\n' \
        "$(fmt_1 "$(med "${k}_wire_up")")"
    if [ "$k" = p2influx ]; then
        printf '  influxd                           CPU %s s  peak RSS %s  (%s points written per run)\n' \
            "$(med "${k}_cpu_influxd")" "$(peak "${k}_rss_influxd")" "$(group "$(med "${k}_points")")"
    fi
done
if [ "$PIPELINE" = 1 ]; then
    echo "--- accounting: every run reconciled, packets read = summarised + merged + drops, 0 drops, 0 gaps"
    echo "    (wire: message bytes handed to ZeroMQ, as the collector logs them and the processors report"
    echo "     conn_bytes_sent; ZMTP framing adds a few bytes per message)"
    echo "--- tapflow end to end (2 processors) against the peers, issue 6's targets"
    printf '  end to end            %12s packets/s   target >= 1,500,000   %s\n' "$(fmt_pps "$E2E")" "$(verdict "$E2E" 1500000)"
    printf '  x argus               %12s             target >= 2.5         %s\n' "$X_ARGUS" "$(verdict "$X_ARGUS" 2.5)"
    printf '  x nfstream            %12s             target >= 15          %s\n' "$X_NFSTREAM" "$(verdict "$X_NFSTREAM" 15)"
    printf '  x tshark              %12s             target >= 20          %s\n' "$X_TSHARK" "$(verdict "$X_TSHARK" 20)"
    printf '  %% of tcpdump          %12s             target >= 40%%         %s\n' "$(pct "$PCT_TCPDUMP")" "$(verdict "$PCT_TCPDUMP" 0.4)"
    printf '  %% of tapflow-refcount %12s             (no target)\n' "$(pct "$PCT_REFCOUNT")"
    printf '  collector / tcpdump   %12s             (issue 2: >= 0.5)\n' "$COLL_TCPDUMP"
    [ "$PEER_PACKETS" = "$PACKETS" ] || echo "  (tshark and nfstream: rates over the $PN-packet capture $PEER_NAME, same mix)"
    echo "--- issue 19, $MIX mix (2 processors writing the conn log, end to end; medians)"
    printf '  %% of tcpdump          %12s             target >= %s%%         %s\n' "$(pct "$PCT_TCPDUMP")" \
        "$(awk -v t="$T_PCT" 'BEGIN{print t*100}')" "$(verdict "$PCT_TCPDUMP" "$T_PCT")"
    printf '  x argus               %12s             target >= %s          %s\n' "$X_ARGUS" "$T_X" "$(verdict "$X_ARGUS" "$T_X")"
    printf '  aggregator CPU/record %12s us          target <= 1 us on flood-heavy\n' "$AGG_US"
    printf '  processors CPU/record %12s us          (all of both processors'"'"' CPU, per-packet work included)\n' "$PROC_US"
    printf '  aggregator records/s per CPU second %s   (records / aggregator CPU seconds)\n' \
        "$(if na "$AGG_US"; then echo n/a; else awk -v u="$AGG_US" 'BEGIN{printf "%.0f", 1e6 / u}'; fi)"
fi
echo "aggregator accounting, 2 processors (last health.jsonl line of the last run):"
cat "$TMP/p2.health" 2>/dev/null || echo n/a

P2=p2
cat <<EOF

---- markdown for bench/RESULTS.md ----
| Date | Commit | Capture | Runs | tcpdump | argus | refcount | tshark ($PN) | nfstream ($PN) | collector | pipeline 1 proc | pipeline 2 proc | 2 proc + InfluxDB | collector / tcpdump | peak RSS collector / processor / aggregator | wire B/packet |
|------|--------|---------|------|---------|-------|----------|-------------|---------------|-----------|-----------------|-----------------|-------------------|---------------------|----------------------------------------------|---------------|
| $DATE | $COMMIT | $NAME ($MB MiB) | $RUNS | $(fmt_pps "${PPS[tcpdump]}") | $(fmt_pps "${PPS[argus]}") | $(fmt_pps "${PPS[refcount]}") | $(fmt_pps "${PPS[tshark]}") | $(fmt_pps "${PPS[nfstream]}") | $(fmt_pps "${PPS[${P2}_coll]-n/a}") | $(fmt_pps "${PPS[p1]-n/a}") | $(fmt_pps "$E2E") | $(fmt_pps "${PPS[p2influx]-n/a}") | $COLL_TCPDUMP | $(peak "${P2}_rss_coll") / $(peak "${P2}_rss_proc") / $(peak "${P2}_rss_agg") | $(fmt_1 "$(med "${P2}_wire_pkt")") |

| tapflow 2 proc end to end | x argus | x nfstream | x tshark | % of tcpdump | % of refcount |
|---------------------------|---------|------------|----------|--------------|---------------|
| $(fmt_pps "$E2E") (target >= 1,500,000: $(verdict "$E2E" 1500000)) | $X_ARGUS (>= 2.5: $(verdict "$X_ARGUS" 2.5)) | $X_NFSTREAM (>= 15: $(verdict "$X_NFSTREAM" 15)) | $X_TSHARK (>= 20: $(verdict "$X_TSHARK" 20)) | $(pct "$PCT_TCPDUMP") (>= 40%: $(verdict "$PCT_TCPDUMP" 0.4)) | $(pct "$PCT_REFCOUNT") |

<details><summary>$DATE, $COMMIT: machine, versions and accounting</summary>

- Machine: $(nproc) CPUs (\`nproc\`), ${CPU:-unknown CPU}, $MEM RAM, $(uname -sr)
- Command: \`$COMMAND\`
- Capture: \`tapflow-gen --mix $MIX --packets $PACKETS --flows $FLOWS --seed $SEED\`, $BYTES bytes; tshark and nfstream: $PEER_NOTE (\`tapflow-gen --mix $MIX --packets $PEER_PACKETS --flows $PEER_FLOWS --seed $SEED\`)
- tcpdump: $(tcpdump --version 2>&1 | head -n 2 | tr '\n' ' ')
- argus: $(ver argus -h); tshark: $(ver tshark --version); nfstream $("$PY" -c 'import nfstream; print(nfstream.__version__)' 2>/dev/null || echo n/a) on $("$PY" --version 2>&1); influxd: $(ver influxd version)
- Aggregator accounting, 2 processors (last line of health.jsonl):
  \`\`\`json
  $(cat "$TMP/p2.health" 2>/dev/null || echo n/a)
  \`\`\`
</details>
---- end ----
EOF
}
echo "SUMMARY mix=$MIX packets=$PACKETS sessions=$FLOWS tcpdump_pps=${PPS[tcpdump]} argus_pps=${PPS[argus]}" \
    "tapflow_pps=$E2E pct_tcpdump=$(pct "$PCT_TCPDUMP") target_pct=>=$(awk -v t="$T_PCT" 'BEGIN{print t*100}')%" \
    "x_argus=$X_ARGUS target_x=>=$T_X agg_us_per_record=$AGG_US proc_us_per_record=$PROC_US verdict=$V19"
