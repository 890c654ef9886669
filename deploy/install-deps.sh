#!/usr/bin/env bash
# Installs the Debian packages tapflow builds, runs and tests with, when missing.
# Usage: deploy/install-deps.sh   (as root, or with sudo available)
set -euo pipefail

packages=(pkg-config libpcap-dev libzmq3-dev python3 tcpdump influxdb tcpreplay hping3 nmap iproute2 ethtool libcap2-bin curl openssl ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian influxdb package starts a system service; tapflow starts its own throwaway
# instances on temporary directories and free ports, so the system one is not needed.
if command -v systemctl >/dev/null && systemctl is-active --quiet influxdb 2>/dev/null; then
    systemctl stop influxdb || true
fi
