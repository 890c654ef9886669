#!/usr/bin/env bash
# Installs the tools bench/run.sh compares tapflow with, when missing: argus (Debian
# argus-server), tshark (Debian tshark, without the setuid dumpcap question) and nfstream (PyPI,
# into the python3 on PATH). tcpdump and influxd come with deploy/install-deps.sh.
# Usage: bench/install-peers.sh   (as root, or with sudo available)
set -euo pipefail

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

missing=()
command -v argus >/dev/null 2>&1 || missing+=(argus-server)
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
if ((${#missing[@]})); then
    echo "install-peers: apt-get install ${missing[*]}" >&2
    # tshark's wireshark-common asks whether non-root users may capture; answer no beforehand.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | "${sudo_cmd[@]}" debconf-set-selections
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
# argus-server's package may start a system service on the default interface; the benchmark
# only reads files, so stop it if it runs.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet argus-server 2>/dev/null; then
    "${sudo_cmd[@]}" systemctl stop argus-server || true
fi

if ! python3 -c 'import nfstream' >/dev/null 2>&1; then
    echo "install-peers: pip install nfstream" >&2
    python3 -m pip install --quiet --root-user-action=ignore nfstream
fi

echo "install-peers: argus $(command -v argus || echo missing), tshark $(command -v tshark || echo missing)," \
    "nfstream $(python3 -c 'import nfstream; print(nfstream.__version__)' 2>/dev/null || echo missing)" >&2
