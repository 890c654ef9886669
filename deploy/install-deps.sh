#!/usr/bin/env bash
# Installs the Debian packages tapflow builds, runs and tests with, when missing. With
# --test (deploy/test.sh), also the reference tools the latency comparisons run
# (integration-tests/tests/latency_refs.rs): tshark, Argus (argus, ra) and nfstream (PyPI, in a
# venv under ~/.cache/tapflow), Chromium for the dashboard's browser tests, and the Kubernetes
# checks' kubectl and kubernetes-validate.
# Usage: deploy/install-deps.sh [--test]   (as root, or with sudo available)
set -euo pipefail

with_test_tools=false
case "${1:-}" in
    --test) with_test_tools=true ;;
    "") ;;
    *) echo "usage: deploy/install-deps.sh [--test]" >&2; exit 2 ;;
esac

packages=(pkg-config libpcap-dev libzmq3-dev python3 tcpdump influxdb tcpreplay hping3 nmap iproute2 ethtool libcap2-bin curl openssl ca-certificates)
if $with_test_tools; then
    packages+=(tshark argus-server argus-client python3-venv)
    # Headless Chromium: the dashboard's browser tests (integration-tests/tests/dashboard.rs).
    packages+=(chromium)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    # tshark asks whether non-root users may capture: no (tapflow's tests run as root).
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        "${sudo_cmd[@]}" debconf-set-selections
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian influxdb package starts a system service; tapflow starts its own throwaway
# instances on temporary directories and free ports, so the system one is not needed.
if command -v systemctl >/dev/null && systemctl is-active --quiet influxdb 2>/dev/null; then
    systemctl stop influxdb || true
fi
# Debian's argus-server starts a capturing daemon where systemd runs: the tests run
# `argus -r` on files only.
if command -v systemctl >/dev/null && systemctl is-active --quiet argus-server 2>/dev/null; then
    systemctl stop argus-server || true
fi

$with_test_tools || exit 0
# nfstream (pinned) for the inter-arrival comparison, in its own venv: the test finds it there
# (or TAPFLOW_NFSTREAM_PYTHON, or a python3 that already imports it).
nfstream_version=6.6.0
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tapflow/nfstream-venv"
has_nfstream() { "$1" -c "import nfstream, sys; sys.exit(nfstream.__version__ != '$nfstream_version')" 2>/dev/null; }
if ! has_nfstream python3 && ! has_nfstream "$venv/bin/python"; then
    echo "installing nfstream==$nfstream_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "nfstream==$nfstream_version"
fi

# The Kubernetes checks (integration-tests/tests/k8s*.rs): a kubectl to render deploy/k8s with its
# built-in kustomize (any installed one; else Debian's kubernetes-client, whose kubectl 1.20
# renders it too), and kubernetes-validate (pinned; it bundles the API schemas, so it validates
# offline) in its own venv, whose Python (with PyYAML) also reads the rendered YAML for the test.
if ! command -v kubectl >/dev/null; then
    echo "installing: kubernetes-client" >&2
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
k8s_validate_version=1.37.0
k8s_venv="${XDG_CACHE_HOME:-$HOME/.cache}/tapflow/k8s-venv"
if ! "$k8s_venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$k8s_validate_version')" 2>/dev/null; then
    echo "installing kubernetes-validate==$k8s_validate_version into $k8s_venv" >&2
    python3 -m venv "$k8s_venv"
    "$k8s_venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$k8s_validate_version"
fi
