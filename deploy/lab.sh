#!/usr/bin/env bash
# A multi-host tapflow lab in network namespaces on this machine, with live capture and real
# traffic tools. Needs root, iproute2 (ip, tc), curl, nmap, hping3, python3 and influxd.
#
# Hosts (one namespace each, prefix tfl<pid>-):
#   client 10.77.0.1, server 10.77.0.2 (HTTP on :8000), attacker 10.77.0.3: on a switch (sw, a
#   bridge) whose ports are mirrored (tc mirred, like a SPAN port) to two tap hosts;
#   tapa, tapb: a collector each, capturing LIVE on its mirror interface mon0;
#   proc0, proc1: a processor each; agg: the aggregator and InfluxDB.
#   The taps, processors and aggregator talk over a second bridge (10.78.0.0/24), not the
#   monitored one.
# Mirrors:
#   default      tap A sees the client's port both ways, tap B the attacker's port both ways;
#   --asymmetric tap A sees what the client and the attacker send (requests), tap B what the
#                server sends (responses): both halves of every session meet in one processor.
# Traffic: 20 curl requests (client -> server:8000), `nmap -sS` of ports 1-200 (attacker ->
# server), and a bounded spoofed SYN flood `hping3 -S --rand-source -i u200 -c 3000` (attacker ->
# server:8000). Then the collectors are stopped (SIGTERM: end of stream), the pipeline drains,
# and InfluxDB is queried back.
#
# Usage: deploy/lab.sh [--asymmetric] [--bin DIR] [--out DIR] [--keep]
#   --bin DIR  the tapflow binaries (default: target/release, built if missing)
#   --out DIR  logs, conn/alerts/health logs and InfluxDB query results (default: a temp dir)
# Nothing leaves the namespaces the script makes; it removes them on exit, also when interrupted.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
asym=0
bin=""
out=""
while (($#)); do
    case "$1" in
        --asymmetric) asym=1; shift ;;
        --bin) bin=${2:?--bin needs a directory}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "lab.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "lab.sh: needs root (network namespaces, live capture)" >&2; exit 2; }
for tool in ip tc ethtool curl nmap hping3 python3 influxd; do
    command -v "$tool" >/dev/null || { echo "lab.sh: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 2; }
done
if [[ -z $bin ]]; then
    bin=$root/target/release
    [[ -x $bin/tapflow-collector ]] || (cd "$root" && cargo build --release --quiet --bin tapflow-collector --bin tapflow-processor --bin tapflow-aggregator)
fi
for b in tapflow-collector tapflow-processor tapflow-aggregator; do
    [[ -x $bin/$b ]] || { echo "lab.sh: $bin/$b is missing" >&2; exit 2; }
done
[[ -n $out ]] || out=$(mktemp -d /tmp/tapflow-lab.XXXXXX)
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/influx" "$out/spool" "$out/keys"

p="tfl$$"
hosts=(sw client server attacker tapa tapb proc0 proc1 agg)
pids=()
cleanup() {
    local h
    for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done
    for h in "${hosts[@]}"; do
        if ip netns list | grep -qw "$p-$h"; then
            ip netns pids "$p-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
            ip netns del "$p-$h" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# on HOST CMD...: runs CMD in HOST's namespace. Background processes are started with
# `ip netns exec` directly instead, so that $! is the program itself (ip execs it).
on() { local h=$1; shift; ip netns exec "$p-$h" "$@"; }
log() { echo "lab: $*" >&2; }

# ---------------------------------------------------------------- the hosts and their wires
for h in "${hosts[@]}"; do
    ip netns add "$p-$h"
    ip -n "$p-$h" link set lo up
done
ip -n "$p-sw" link add br0 type bridge
ip -n "$p-sw" link add br1 type bridge
# Forward at once: a bridge that learns and forwards without STP delays.
for br in br0 br1; do
    ip -n "$p-sw" link set "$br" type bridge forward_delay 0 stp_state 0
    ip -n "$p-sw" link set "$br" up
done

# wire HOST IFNAME SWITCHPORT BRIDGE ADDR: a veth from HOST's IFNAME to the switch's port.
wire() {
    ip -n "$p-sw" link add "$3" type veth peer name "$2" netns "$p-$1"
    ip -n "$p-sw" link set "$3" master "$4" up
    ip -n "$p-$1" addr add "$5/24" dev "$2"
    ip -n "$p-$1" link set "$2" up
}
wire client eth0 c-client br0 10.77.0.1
wire server eth0 c-server br0 10.77.0.2
wire attacker eth0 c-attacker br0 10.77.0.3
# veths hand packets over with checksums still to be filled in (offloading), and a mirror copies
# them so: have the hosts compute them, as a real NIC puts them on a real wire.
for h in client server attacker; do on "$h" ethtool -K eth0 tx off >/dev/null; done
wire tapa mgmt m-tapa br1 10.78.0.11
wire tapb mgmt m-tapb br1 10.78.0.12
wire proc0 mgmt m-proc0 br1 10.78.0.21
wire proc1 mgmt m-proc1 br1 10.78.0.22
wire agg mgmt m-agg br1 10.78.0.30
# The mirror links: the switch's mirror port -> the tap's capture interface (no address).
for t in tapa tapb; do
    ip -n "$p-sw" link add "s-$t" type veth peer name mon0 netns "$p-$t"
    ip -n "$p-sw" link set "s-$t" up
    ip -n "$p-$t" link set mon0 up
done
# mirror PORT DIRECTION TAP: copies what crosses the switch port in that direction (ingress:
# what the host sends; egress: what it receives) to the tap's mirror link.
mirror() {
    ip netns exec "$p-sw" tc qdisc replace dev "$1" clsact
    ip netns exec "$p-sw" tc filter add dev "$1" "$2" protocol all u32 match u32 0 0 action mirred egress mirror dev "s-$3"
}
if ((asym)); then
    mirror c-client ingress tapa
    mirror c-attacker ingress tapa
    mirror c-server ingress tapb
else
    mirror c-client ingress tapa
    mirror c-client egress tapa
    mirror c-attacker ingress tapb
    mirror c-attacker egress tapb
fi

# ---------------------------------------------------------------- InfluxDB and tapflow
# In the aggregator host's own namespace, so its loopback ports are free.
source "$root/deploy/lib/influxd.sh"
influxd_conf "$out/influx" 8086 8088
ip netns exec "$p-agg" influxd -config "$out/influx/influxdb.conf" >"$out/influxd.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do on agg curl -fs http://127.0.0.1:8086/ping >/dev/null && break; sleep 0.1; done
on agg curl -fs http://127.0.0.1:8086/ping >/dev/null || { log "influxd did not start: $out/influxd.log"; exit 1; }

# Every link crosses the lab's network, so every link is CURVE: a key pair per collector, one
# shared by the processors, one for the aggregator; each server lists its clients' public keys,
# each bound to the names it may speak for (its .pub line with `, names = [...]` appended).
mkdir -m 0700 "$out/keys"
"$bin/tapflow-aggregator" keygen --out "$out/keys/aggregator" >/dev/null 2>&1
"$bin/tapflow-processor" keygen --out "$out/keys/processor" >/dev/null 2>&1
for t in tapa tapb; do "$bin/tapflow-collector" keygen --out "$out/keys/$t" >/dev/null 2>&1; done
for t in tapa tapb; do
    sed -n "s/^public = .*/&, names = [\"$t\"]/p" "$out/keys/$t.pub"
done >"$out/keys/collectors.clients"
sed -n 's/^public = .*/&, names = ["proc0", "proc1"]/p' "$out/keys/processor.pub" >"$out/keys/processors.clients"

# Low thresholds: the lab's attacks are small and short.
ip netns exec "$p-agg" "$bin/tapflow-aggregator" --listen tcp://10.78.0.30:5700 --processors 2 --exit-on-eos \
    --curve-key "$out/keys/aggregator.key" --curve-clients "$out/keys/processors.clients" \
    --conn-log "$out/conn.jsonl" --alerts-log "$out/alerts.jsonl" --health-log "$out/health.jsonl" \
    --influx-url http://127.0.0.1:8086 --influx-db tapflow --influx-spool-dir "$out/spool" \
    2>"$out/aggregator.log" &
agg_pid=$!
pids+=("$agg_pid")
for i in 0 1; do
    ip netns exec "$p-proc$i" "$bin/tapflow-processor" --listen "tcp://10.78.0.2$((i + 1)):5601" \
        --aggregator tcp://10.78.0.30:5700 --collectors 2 --exit-on-eos --name "proc$i" \
        --curve-key "$out/keys/processor.key" --curve-clients "$out/keys/collectors.clients" \
        --curve-server-key "$out/keys/aggregator.pub" \
        2>"$out/processor$i.log" &
    pids+=("$!")
done
collector_pids=()
for t in tapa tapb; do
    # --immediate: the lab's traffic is light; deliver it without waiting for full blocks.
    ip netns exec "$p-$t" "$bin/tapflow-collector" --interface mon0 --immediate --name "$t" \
        --processor tcp://10.78.0.21:5601 --processor tcp://10.78.0.22:5601 \
        --curve-key "$out/keys/$t.key" --curve-server-key "$out/keys/processor.pub" \
        2>"$out/collector-$t.log" &
    collector_pids+=("$!")
    pids+=("$!")
done
# Live capture starts when the collector has opened mon0.
for t in tapa tapb; do
    for _ in $(seq 100); do grep -q "capture open" "$out/collector-$t.log" 2>/dev/null && break; sleep 0.1; done
done
sleep 1

# ---------------------------------------------------------------- traffic
ip netns exec "$p-server" python3 -m http.server 8000 --bind 10.77.0.2 >"$out/http.log" 2>&1 &
pids+=("$!")
# Wait for the server from inside its host: a probe over the monitored switch would be a session.
for _ in $(seq 100); do on server ss -Hltn 'sport = :8000' | grep -q . && break; sleep 0.1; done
requests=0
for _ in $(seq 20); do
    on client curl -fs -o /dev/null http://10.77.0.2:8000/ && requests=$((requests + 1))
done
log "curl: $requests requests answered"
on attacker nmap -sS -n -Pn -p 1-200 --max-retries 1 10.77.0.2 >"$out/nmap.log" 2>&1
log "nmap: $(grep -o 'Not shown: .*\|scanned in .*' "$out/nmap.log" | tr '\n' ' ')"
# The count bounds it (no --flood). Spoofed sources get no answer: their SYN-ACKs cannot be sent.
on attacker hping3 -S --rand-source -p 8000 -i u200 -c 3000 -q 10.77.0.2 >"$out/hping3.log" 2>&1 || true
log "hping3: $(grep -o '[0-9]* packets transmitted' "$out/hping3.log" || echo '? packets transmitted')"
echo "$requests" >"$out/curl_requests"
sleep 1

# ---------------------------------------------------------------- end of stream
for c in "${collector_pids[@]}"; do kill -TERM "$c"; done
status=0
for c in "${collector_pids[@]}"; do wait "$c" || status=$?; done
((status == 0)) || log "a collector exited with $status"
waited=0
while kill -0 "$agg_pid" 2>/dev/null && ((waited < 600)); do sleep 0.1; waited=$((waited + 1)); done
wait "$agg_pid" || { log "the aggregator exited with $?: $out/aggregator.log"; exit 1; }

for t in tapa tapb; do
    line=$(grep "collector finished" "$out/collector-$t.log" | tail -n 1)
    fields=$(grep -o 'packets_read=[0-9]*\|summarised=[0-9]*\|pcap_received=[0-9]*\|kernel_dropped=[0-9]*\|if_dropped=[0-9]*\|reconciled=[a-z]*' <<<"$line" | tr '\n' ' ')
    log "live capture $t: $fields"
done

# ---------------------------------------------------------------- InfluxDB, queried back
query() { on agg curl -fsS -G http://127.0.0.1:8086/query --data-urlencode db=tapflow --data-urlencode "q=$1"; }
{
    echo "{\"sessions\": $(query 'SELECT count(uid) FROM tapflow_conn'),"
    echo " \"http_sf\": $(query "SELECT count(uid) FROM tapflow_conn WHERE conn_state = 'SF' AND resp_p = 8000 AND orig_h = '10.77.0.1' AND orig_pkts > 0 AND resp_pkts > 0"),"
    echo " \"alerts\": $(query "SELECT count(peak) FROM tapflow_alert WHERE event = 'end' GROUP BY kind"),"
    echo " \"alert_ends\": $(query "SELECT kind, src, dst, peak FROM tapflow_alert WHERE event = 'end'"),"
    echo " \"traffic\": $(query 'SELECT sum(packets) FROM tapflow_traffic GROUP BY collector')}"
} >"$out/influx.json"
log "InfluxDB: $(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
def v(r):
    s = r["results"][0].get("series") or [{"values": [[0, 0]]}]
    return s[0]["values"][0][1]
kinds = sorted({row[1] for s in d["alert_ends"]["results"][0].get("series", []) for row in s["values"]})
print(v(d["sessions"]), "sessions,", v(d["http_sf"]), "SF HTTP sessions, alert episodes:", " ".join(kinds))
' "$out/influx.json")"
log "results in $out (exit 0)"
