#!/usr/bin/env bash
# Runs tapflow's main job on one machine: collector -> 2 processors -> aggregator as real
# processes on loopback over a capture, then prints the top sessions of the conn log and the
# accounting report. (InfluxDB output arrives with the aggregator's writer, issue 4.)
# Usage: deploy/quickstart.sh [CAPTURE.pcap|pcapng] [--processors N]
#   With no capture: ../shared/pcaps/zeek-ssh.pcap when present, else a generated demo capture.
set -euo pipefail
cd "$(dirname "$0")/.."

capture=""
processors=2
while (($#)); do
    case "$1" in
        --processors) processors=$2; shift 2 ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) capture=$1; shift ;;
    esac
done

deploy/install-deps.sh
cargo build --release --workspace --quiet
bin=target/release
work=$(mktemp -d /tmp/tapflow-quickstart.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

if [[ -z $capture ]]; then
    if [[ -f ../shared/pcaps/zeek-ssh.pcap ]]; then
        capture=../shared/pcaps/zeek-ssh.pcap
    else
        capture=$work/demo.pcap
        "$bin/tapflow-gen" --packets 200000 --flows 5000 --seed 1 --out "$capture"
    fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
agg_port=$(free_port)
"$bin/tapflow-aggregator" --listen "tcp://127.0.0.1:$agg_port" --processors "$processors" --exit-on-eos \
    --health-log "$work/health.jsonl" --conn-log "$work/conn.jsonl" 2>"$work/aggregator.log" &
agg_pid=$!; pids+=("$agg_pid")
proc_args=()
for ((i = 0; i < processors; i++)); do
    port=$(free_port)
    "$bin/tapflow-processor" --listen "tcp://127.0.0.1:$port" --aggregator "tcp://127.0.0.1:$agg_port" \
        --collectors 1 --exit-on-eos --name "processor$i" 2>"$work/processor$i.log" &
    pids+=("$!")
    proc_args+=(--processor "tcp://127.0.0.1:$port")
done
echo "tapflow: $capture -> $processors processors -> aggregator (logs in $work)"
status=0
"$bin/tapflow-collector" --pcap "$capture" "${proc_args[@]}" || status=$?
wait "$agg_pid" || true
echo
python3 - "$work/conn.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{len(rows)} sessions in the conn log; the 5 largest:")
rows.sort(key=lambda r: -(r.get("orig_ip_bytes", 0) + r.get("resp_ip_bytes", 0)))
for r in rows[:5]:
    print(f"  {r['proto']:4} {r['id.orig_h']}:{r['id.orig_p']} -> {r['id.resp_h']}:{r['id.resp_p']}"
          f"  {r['conn_state']:6} {r.get('history', '-'):12} {r['orig_pkts'] + r['resp_pkts']} pkts"
          f"  {r['orig_ip_bytes'] + r['resp_ip_bytes']} bytes  uid {r['uid']}")
PY
echo
sed -n '/accounting/,$p' "$work/aggregator.log" | sed 's/^.*accounting/accounting/'
echo
echo "conn log: $work/conn.jsonl   accounting report (JSON): $work/health.jsonl"
exit "$status"
