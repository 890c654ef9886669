# Sourced by deploy/quickstart.sh, deploy/lab.sh and bench/run.sh: the configuration of a
# throwaway InfluxDB 1.x (Debian's influxd) that keeps everything under one directory and binds
# loopback only, started by hand, without systemd.

# influxd_conf DIR HTTP_PORT RPC_PORT: writes DIR/influxdb.conf (data under DIR).
influxd_conf() {
    local dir=$1 http=$2 rpc=$3
    mkdir -p "$dir"
    cat >"$dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$http"
  log-enabled = false
[logging]
  level = "warn"
CONF
}
