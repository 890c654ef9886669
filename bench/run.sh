#!/usr/bin/env bash
# tapflow throughput harness: libpcap's read limit (tcpdump) against the collector alone and the
# whole pipeline (1 collector, 2 processors, 1 aggregator as real processes on loopback), over
# the same synthetic capture, interleaved run by run so both see the same machine state.
#
# Usage: bench/run.sh [--packets 5000000] [--flows 200000] [--runs 3] [--seed 1]
#                     [--timeout 900] [--no-pipeline]
#
# Prints medians (packets/s), the collector/tcpdump ratio, peak RSS per process, the aggregator's
# last health record, and a markdown block to paste into bench/RESULTS.md (nothing is appended
# automatically). The capture is generated into bench/data/ (git-ignored) if missing.
set -euo pipefail

PACKETS=5000000
FLOWS=200000
RUNS=3
SEED=1
LIMIT=900
PIPELINE=1

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "run.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --packets) PACKETS=${2:?}; shift 2 ;;
        --flows) FLOWS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --seed) SEED=${2:?}; shift 2 ;;
        --timeout) LIMIT=${2:?}; shift 2 ;;
        --no-pipeline) PIPELINE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for v in "$PACKETS" "$FLOWS" "$RUNS" "$SEED" "$LIMIT"; do
    [[ "$v" =~ ^[0-9]+$ ]] || die "not a number: $v"
done
[ "$RUNS" -ge 1 ] || die "--runs must be at least 1"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/target/release"
DATA="$ROOT/bench/data"
NAME="synth-$PACKETS-$FLOWS"
[ "$SEED" = 1 ] || NAME="$NAME-s$SEED"
CAPTURE="$DATA/$NAME.pcap"
COMMAND="bench/run.sh --packets $PACKETS --flows $FLOWS --runs $RUNS"
[ "$SEED" = 1 ] || COMMAND="$COMMAND --seed $SEED"
[ "$PIPELINE" = 1 ] || COMMAND="$COMMAND --no-pipeline"

# ---------------------------------------------------------------- build and check the binaries
cd "$ROOT"
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
    cargo build --release -p tapflow-bench >&2 || die "building tapflow-gen failed"
fi

# ---------------------------------------------------------------- the capture
if [ ! -s "$CAPTURE" ]; then
    mkdir -p "$DATA"
    echo "== generating $CAPTURE" >&2
    "$BIN/tapflow-gen" --packets "$PACKETS" --flows "$FLOWS" --seed "$SEED" --out "$CAPTURE.part" >&2
    mv "$CAPTURE.part" "$CAPTURE"
fi
BYTES=$(stat -c %s "$CAPTURE")
echo "== warming the page cache with $CAPTURE ($BYTES bytes)" >&2
cat "$CAPTURE" > /dev/null

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
HAVE_TCPDUMP=0
if command -v tcpdump >/dev/null 2>&1; then HAVE_TCPDUMP=1; else
    echo "run.sh: tcpdump not installed: skipping the libpcap baseline (install nothing)" >&2
fi

now_ns() { date +%s%N; }

# Runs "$@" in the background under `timeout` (TERM after --timeout seconds, KILL 10 s later),
# inside GNU time when available so its peak RSS (KB) lands in $1.rss (time reports the largest
# RSS among the processes it waited for: the program, not the tiny timeout). stdout and stderr
# go to $1.log. Sets LAST_PID: the outermost process (time, or timeout).
spawn() {
    local tag=$1; shift
    if [ "$HAVE_TIME" = 1 ]; then
        /usr/bin/time -f '%M' -o "$tag.rss" timeout -k 10 "$LIMIT" "$@" >"$tag.log" 2>&1 &
    else
        timeout -k 10 "$LIMIT" "$@" >"$tag.log" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Asks a spawned process to stop: signals its `timeout`, which passes TERM on to the program and
# sends KILL 10 s later if it is still there. (GNU time would die of TERM and orphan the program,
# so it is the timeout below it that is signalled, found by its parent's pid.)
stop() {
    local c
    if [ "$HAVE_TIME" = 1 ]; then
        for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill "$c" 2>/dev/null || true; done
    else
        kill "$1" 2>/dev/null || true
    fi
}

# Waits for a spawned process; sets RC to its exit status and forgets its pid.
reap() {
    local p keep=()
    RC=0; wait "$1" || RC=$?
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

rss_of() { if [ -s "$1.rss" ]; then tail -n 1 "$1.rss"; else echo n/a; fi; }

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
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    else
        die "need ss or python3 to find free ports"
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

# ---------------------------------------------------------------- the runs
T_TCPDUMP=(); T_COLLECTOR=(); T_PIPELINE=()
R_TCPDUMP=(); R_COLLECTOR=(); R_PROC=(); R_AGG=()
HEALTH=""

for run in $(seq 1 "$RUNS"); do
    D="$TMP/run$run"; mkdir -p "$D"
    if [ "$HAVE_TCPDUMP" = 1 ]; then
        t0=$(now_ns)
        spawn "$D/tcpdump" tcpdump -r "$CAPTURE" -w /dev/null
        reap "$LAST_PID"
        t1=$(now_ns)
        [ "$RC" = 0 ] || fail_run "tcpdump exited with $RC (run $run)" "$D"
        T_TCPDUMP+=("$(( t1 - t0 ))"); R_TCPDUMP+=("$(rss_of "$D/tcpdump")")
        echo "run $run: tcpdump $(awk -v n="$(( t1 - t0 ))" 'BEGIN{printf "%.2f", n/1e9}') s" >&2
    fi
    [ "$PIPELINE" = 1 ] || continue

    PA=$(free_port); P0=$(free_port "$PA"); P1=$(free_port "$PA" "$P0")
    spawn "$D/aggregator" "$BIN/tapflow-aggregator" --listen "tcp://127.0.0.1:$PA" --processors 2 \
        --exit-on-eos --health-log "$D/health.jsonl" --conn-log "$D/conn.jsonl"
    AGG=$LAST_PID
    spawn "$D/processor0" "$BIN/tapflow-processor" --listen "tcp://127.0.0.1:$P0" \
        --aggregator "tcp://127.0.0.1:$PA" --collectors 1 --exit-on-eos
    PR0=$LAST_PID
    spawn "$D/processor1" "$BIN/tapflow-processor" --listen "tcp://127.0.0.1:$P1" \
        --aggregator "tcp://127.0.0.1:$PA" --collectors 1 --exit-on-eos
    PR1=$LAST_PID
    wait_listening "$AGG $PR0 $PR1" "$PA" "$P0" "$P1" \
        || fail_run "the aggregator or a processor did not start listening (run $run)" "$D"

    t0=$(now_ns)
    spawn "$D/collector" "$BIN/tapflow-collector" --pcap "$CAPTURE" \
        --processor "tcp://127.0.0.1:$P0" --processor "tcp://127.0.0.1:$P1"
    reap "$LAST_PID"
    t1=$(now_ns)
    [ "$RC" = 0 ] || fail_run "tapflow-collector exited with $RC (run $run; 124 or 137: --timeout reached)" "$D"
    reap "$AGG"
    t2=$(now_ns)
    [ "$RC" = 0 ] || fail_run "tapflow-aggregator exited with $RC (run $run; 124 or 137: --timeout reached)" "$D"
    for p in "$PR0" "$PR1"; do
        reap "$p"
        [ "$RC" = 0 ] || fail_run "a tapflow-processor exited with $RC (run $run; 124 or 137: --timeout reached)" "$D"
    done

    T_COLLECTOR+=("$(( t1 - t0 ))"); T_PIPELINE+=("$(( t2 - t0 ))")
    R_COLLECTOR+=("$(rss_of "$D/collector")"); R_AGG+=("$(rss_of "$D/aggregator")")
    R_PROC+=("$(rss_of "$D/processor0")" "$(rss_of "$D/processor1")")
    [ -s "$D/health.jsonl" ] && HEALTH=$(tail -n 1 "$D/health.jsonl")
    echo "run $run: collector $(awk -v n="$(( t1 - t0 ))" 'BEGIN{printf "%.2f", n/1e9}') s," \
        "pipeline $(awk -v n="$(( t2 - t0 ))" 'BEGIN{printf "%.2f", n/1e9}') s" >&2
done

# ---------------------------------------------------------------- report
median() {  # of nanosecond integers, printed in seconds; n/a if none
    [ $# -gt 0 ] || { echo n/a; return; }
    printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {
        m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.3f", m/1e9 }'
}
rate() { [ "$1" = n/a ] && { echo n/a; return; }; awk -v p="$PACKETS" -v s="$1" 'BEGIN{printf "%.0f", p/s}'; }
peak_mb() {  # the largest of KB values, in MB; n/a if none known
    printf '%s\n' "$@" | { grep -E '^[0-9]+$' || true; } | sort -n | tail -n 1 \
        | awk '{printf "%.0f MB", $1/1024} END {if (NR==0) print "n/a"}'
}
group() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }

S_TCPDUMP=$(median "${T_TCPDUMP[@]+"${T_TCPDUMP[@]}"}")
S_COLLECTOR=$(median "${T_COLLECTOR[@]+"${T_COLLECTOR[@]}"}")
S_PIPELINE=$(median "${T_PIPELINE[@]+"${T_PIPELINE[@]}"}")
PPS_TCPDUMP=$(rate "$S_TCPDUMP"); PPS_COLLECTOR=$(rate "$S_COLLECTOR"); PPS_PIPELINE=$(rate "$S_PIPELINE")
RATIO=n/a
if [ "$PPS_TCPDUMP" != n/a ] && [ "$PPS_COLLECTOR" != n/a ]; then
    RATIO=$(awk -v a="$PPS_COLLECTOR" -v b="$PPS_TCPDUMP" 'BEGIN{printf "%.2f", a/b}')
fi
RSS_TCPDUMP=$(peak_mb "${R_TCPDUMP[@]+"${R_TCPDUMP[@]}"}")
RSS_COLLECTOR=$(peak_mb "${R_COLLECTOR[@]+"${R_COLLECTOR[@]}"}")
RSS_PROC=$(peak_mb "${R_PROC[@]+"${R_PROC[@]}"}")
RSS_AGG=$(peak_mb "${R_AGG[@]+"${R_AGG[@]}"}")
fmt_pps() { if [ "$1" = n/a ]; then echo n/a; else group "$1"; fi; }
fmt_s() { if [ "$1" = n/a ]; then echo n/a; else echo "$1 s"; fi; }

CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
MEM=$(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT-dirty"
DATE=$(date -u +%Y-%m-%d)
MB=$(awk -v b="$BYTES" 'BEGIN{printf "%.0f", b/1048576}')

cat <<EOF

=== $NAME: $(group "$PACKETS") packets, $(group "$FLOWS") flows, $MB MiB; median of $RUNS runs
tcpdump -r F -w /dev/null      $(fmt_s "$S_TCPDUMP")   $(fmt_pps "$PPS_TCPDUMP") packets/s   peak RSS $RSS_TCPDUMP
tapflow-collector (start-exit) $(fmt_s "$S_COLLECTOR")   $(fmt_pps "$PPS_COLLECTOR") packets/s   peak RSS $RSS_COLLECTOR
whole pipeline (to agg. exit)  $(fmt_s "$S_PIPELINE")   $(fmt_pps "$PPS_PIPELINE") packets/s   peak RSS processor $RSS_PROC, aggregator $RSS_AGG
collector / tcpdump            $RATIO
aggregator accounting (last health.jsonl line):
${HEALTH:-n/a}

---- markdown for bench/RESULTS.md ----
| $DATE | $COMMIT | $NAME ($MB MiB) | $RUNS | $(fmt_pps "$PPS_TCPDUMP") | $(fmt_pps "$PPS_COLLECTOR") | $(fmt_pps "$PPS_PIPELINE") | $RATIO | $RSS_COLLECTOR / $RSS_PROC / $RSS_AGG |

<details><summary>$DATE, $COMMIT: machine and accounting</summary>

- Machine: $(nproc) CPUs (\`nproc\`), ${CPU:-unknown CPU}, $MEM RAM, $(uname -sr)
- Command: \`$COMMAND\`
- Capture: \`tapflow-gen --packets $PACKETS --flows $FLOWS --seed $SEED\`, $BYTES bytes
- tcpdump: $(tcpdump --version 2>&1 | head -n 2 | tr '\n' ' ')
- Aggregator accounting (last line of health.jsonl):
  \`\`\`json
  ${HEALTH:-n/a}
  \`\`\`
</details>
---- end ----
EOF
