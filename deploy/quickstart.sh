#!/usr/bin/env bash
# Runs tapflow's main job on one machine: a throwaway InfluxDB (Debian's influxd on a temporary
# directory and free loopback ports), then collector -> 2 processors -> aggregator as real
# processes on loopback over a capture; prints the largest sessions, the alert episodes, the
# accounting report, what InfluxDB holds, and the InfluxQL to look at it; then prints the
# dashboard's URL (the aggregator's --http-listen) and, when run from a terminal, keeps serving
# it and InfluxDB until Ctrl-C (otherwise, e.g. in tests, it stops them and exits).
# Usage: deploy/quickstart.sh [CAPTURE.pcap|pcapng] [--processors N]
#        deploy/quickstart.sh --interface IFACE [--seconds 30] [--processors N]   (live, as root)
#   With neither: a demo capture it generates (sessions, a port scan and a SYN flood).
set -euo pipefail
cd "$(dirname "$0")/.."

capture=""
interface=""
seconds=30
processors=2
while (($#)); do
    case "$1" in
        --processors) processors=${2:?--processors needs a number}; shift 2 ;;
        --interface) interface=${2:?--interface needs a name}; shift 2 ;;
        --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "quickstart.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) capture=$1; shift ;;
    esac
done
[[ $processors =~ ^[1-9][0-9]*$ ]] || { echo "quickstart.sh: --processors must be a positive number" >&2; exit 2; }
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "quickstart.sh: --seconds must be a positive number" >&2; exit 2; }
if [[ -n $interface && -n $capture ]]; then
    echo "quickstart.sh: give a capture or --interface, not both" >&2; exit 2
fi
if [[ -n $capture && ! -r $capture ]]; then
    echo "quickstart.sh: cannot read $capture" >&2; exit 2
fi

deploy/install-deps.sh
# TAPFLOW_BIN_DIR: use binaries built elsewhere (the tests run this script on their debug build).
if [[ -n ${TAPFLOW_BIN_DIR:-} ]]; then
    bin=$TAPFLOW_BIN_DIR
else
    cargo build --release --workspace --quiet
    bin=target/release
fi
work=$(mktemp -d /tmp/tapflow-quickstart.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

if [[ -z $capture && -z $interface ]]; then
    capture=$work/demo.pcap
    echo "generating a demo capture: $capture"
    "$bin/tapflow-gen" --packets 200000 --flows 20000 --seed 1 --out "$capture" >/dev/null
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A throwaway InfluxDB 1.x: everything under $work, loopback only, no systemd.
influx_port=$(free_port); rpc_port=$(free_port)
source deploy/lib/influxd.sh
influxd_conf "$work/influx" "$influx_port" "$rpc_port"
influxd -config "$work/influx/influxdb.conf" >"$work/influxd.log" 2>&1 &
pids+=("$!")
influx="http://127.0.0.1:$influx_port"
for _ in $(seq 100); do curl -fs "$influx/ping" >/dev/null && break; sleep 0.1; done
curl -fs "$influx/ping" >/dev/null || { echo "influxd did not start: see $work/influxd.log" >&2; exit 1; }

agg_port=$(free_port); ack_port=$(free_port); http_port=$(free_port)
# Every link is on loopback: plain ZeroMQ (--plain; on other hosts, CURVE keys: deploy/README.md).
# The dashboard (loopback only) stays up after the run (--http-linger) until the aggregator is
# sent SIGTERM or SIGINT. --state-dir (here a temporary folder) and acknowledged delivery: an
# aggregator killed and started again with the same command line loses nothing; checkpoints
# keep its write-ahead log small.
"$bin/tapflow-aggregator" --plain --listen "tcp://127.0.0.1:$agg_port" --processors "$processors" --exit-on-eos \
    --state-dir "$work/state" --ack-listen "tcp://127.0.0.1:$ack_port" \
    --health-log "$work/health.jsonl" --conn-log "$work/conn.jsonl" --alerts-log "$work/alerts.jsonl" \
    --influx-url "$influx" --influx-db tapflow --influx-spool-dir "$work/spool" \
    --http-listen "127.0.0.1:$http_port" --http-linger 2>"$work/aggregator.log" &
agg_pid=$!; pids+=("$agg_pid")
proc_args=()
for ((i = 0; i < processors; i++)); do
    port=$(free_port)
    "$bin/tapflow-processor" --plain --listen "tcp://127.0.0.1:$port" --aggregator "tcp://127.0.0.1:$agg_port" \
        --aggregator-acks "tcp://127.0.0.1:$ack_port" --collectors 1 --exit-on-eos --name "processor$i" \
        2>"$work/processor$i.log" &
    pids+=("$!")
    proc_args+=(--processor "tcp://127.0.0.1:$port")
done
status=0
report_failure() { echo "tapflow-collector exited with $status:" >&2; grep -E "ERROR|WARN" "$work/collector.log" >&2 || tail -n 5 "$work/collector.log" >&2; }
if [[ -n $interface ]]; then
    echo "tapflow: live on $interface for $seconds s -> $processors processors -> aggregator (logs in $work)"
    "$bin/tapflow-collector" --plain --interface "$interface" "${proc_args[@]}" 2>"$work/collector.log" &
    coll=$!
    pids+=("$coll")
    sleep "$seconds"
    kill -TERM "$coll" 2>/dev/null || true
    wait "$coll" || status=$?
else
    echo "tapflow: $capture -> $processors processors -> aggregator (logs in $work)"
    "$bin/tapflow-collector" --plain --pcap "$capture" "${proc_args[@]}" 2>"$work/collector.log" || status=$?
fi
((status == 0)) || report_failure
if ((status == 0)) && grep -q WARN "$work/collector.log"; then
    echo "collector warnings:"; grep WARN "$work/collector.log" | sed 's/^.*WARN [^ ]* /  /'
fi
# The run is over when the aggregator lingers (or has exited, on a failure).
while kill -0 "$agg_pid" 2>/dev/null && ! grep -q "serving the dashboard until" "$work/aggregator.log"; do
    sleep 0.2
done
kill -0 "$agg_pid" 2>/dev/null || { wait "$agg_pid" || true; }
echo
python3 - "$work/conn.jsonl" "$work/alerts.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{len(rows)} sessions in the conn log; the 5 largest:")
rows.sort(key=lambda r: -(r.get("orig_ip_bytes", 0) + r.get("resp_ip_bytes", 0)))
for r in rows[:5]:
    ep = lambda h, p: f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
    print(f"  {r['proto']:4} {ep(r['id.orig_h'], r['id.orig_p'])} -> {ep(r['id.resp_h'], r['id.resp_p'])}"
          f"  {r['conn_state']:6} {r.get('history', '-'):12} {r['orig_pkts'] + r['resp_pkts']} pkts"
          f"  {r['orig_ip_bytes'] + r['resp_ip_bytes']} bytes  uid {r['uid']}")
alerts = [json.loads(l) for l in open(sys.argv[2])]
episodes = [a for a in alerts if a["event"] == "end"]
print(f"\n{len(episodes)} alert episodes:")
for a in episodes:
    print(f"  {a['kind']:14} {a['src']} -> {a['dst']}  peak {a['peak']}  windows {a['windows']}")
PY
echo
sed -n '/accounting/,$p' "$work/aggregator.log" | sed 's/^.*accounting/accounting/' | sed '/INFO\|WARN\|ERROR/d'
echo
q() {
    curl -s -G "$influx/query" --data-urlencode db=tapflow --data-urlencode "q=$1" |
        python3 -c 'import json, sys; s = json.load(sys.stdin)["results"][0].get("series"); print(s[0]["values"][0][1] if s else 0)'
}
echo "InfluxDB ($influx, database tapflow):"
echo "  sessions (tapflow_conn points):      $(q 'SELECT count(uid) FROM tapflow_conn')"
echo "  alert events (tapflow_alert points): $(q 'SELECT count(src) FROM tapflow_alert')"
echo "  packets (sum of tapflow_traffic):    $(q 'SELECT sum(packets) FROM tapflow_traffic')"
cat <<HELP

Look further with InfluxQL while it runs (Ctrl-C stops InfluxDB), e.g.:
  curl -G $influx/query --data-urlencode db=tapflow --data-urlencode 'q=SELECT * FROM tapflow_alert'
  curl -G $influx/query --data-urlencode db=tapflow --data-urlencode 'q=SELECT sum(bytes) FROM tapflow_traffic GROUP BY proto'
  curl -G $influx/query --data-urlencode db=tapflow --data-urlencode 'q=SELECT uid, orig_h, resp_h, history FROM tapflow_conn WHERE conn_state = '"'"'SF'"'"' LIMIT 10'
Files: conn log $work/conn.jsonl, alerts $work/alerts.jsonl, accounting $work/health.jsonl
HELP
dashboard="http://127.0.0.1:$http_port/"
echo
if kill -0 "$agg_pid" 2>/dev/null; then
    echo "Dashboard: $dashboard  (traffic, alert episodes, top talkers, session search, pipeline health)"
else
    echo "Dashboard: not served (the aggregator has exited: see $work/aggregator.log)"
fi
if [[ -t 0 ]] && kill -0 "$agg_pid" 2>/dev/null; then
    echo "Serving the dashboard and InfluxDB until Ctrl-C."
    wait "$agg_pid" || true
fi
kill -TERM "$agg_pid" 2>/dev/null && { wait "$agg_pid" || true; }
exit "$status"
