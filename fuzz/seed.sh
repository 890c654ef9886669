#!/usr/bin/env bash
# Writes the seed corpora into fuzz/corpus/<target>/ (git-ignored; run.sh calls this when a
# corpus is missing). Seeds are valid inputs the fuzzer mutates from:
# - wire_decode: every collector and processor message kind, from proto/tests/wire.rs
#   (FUZZ_SEED_DIR makes its `fuzz_seeds` test write them);
# - packet_decode: runs of packets from the shared captures in ../shared/pcaps (skipped, with
#   a note, when that folder or python3 is absent: the corpus then starts empty);
# - capture_records: the shared captures as files (the small ones whole, every one's first 4 KB);
# - pcapng_records: the same for the pcapng captures of ../shared/pcaps and of the Zeek corpus;
# - processor_set: serialised slot tables (2 and 300 members: one- and two-byte owners; a valid
#   table is past libFuzzer's default 4 KB input limit, which a larger seed raises) and a
#   processor-set file;
# - classify: payload evidence of a few protocols (SSH, HTTP, FTP, a TLS ClientHello with SNI, DNS)
#   in the target's layout (fuzz/fuzz_targets/classify.rs).
# Exits 1, saying which, when seeds that can be written are not (a failing proto test, a
# python3 error, an empty corpus); only packet_decode and capture_records may stay empty, with
# a note, when ../shared/pcaps (or, for packet_decode, python3) is absent.
set -euo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$fuzz")"
pcaps="${TAPFLOW_PCAPS:-$root/../shared/pcaps}"

mkdir -p "$fuzz/corpus/wire_decode" "$fuzz/corpus/packet_decode" "$fuzz/corpus/capture_records" \
    "$fuzz/corpus/pcapng_records" "$fuzz/corpus/processor_set" "$fuzz/corpus/classify"
# Any failure below ends the script with a message and a non-zero exit (run.sh stops on it):
# a fuzz run must not start from a corpus that silently failed to be written.
fail() {
    echo "seed.sh: $*" >&2
    exit 1
}
# The number of files in a corpus folder.
count() { find "$1" -maxdepth 1 -type f | wc -l; }

if ! out="$(FUZZ_SEED_DIR="$fuzz/corpus/wire_decode" \
    cargo test --quiet --manifest-path "$root/Cargo.toml" -p tapflow-proto --test wire \
    fuzz_seeds -- --exact --nocapture 2>&1)"; then
    printf '%s\n' "$out" >&2
    fail "could not write the wire_decode seeds: proto's fuzz_seeds test failed (above)"
fi
grep -E '^wrote' <<<"$out" || fail "fuzz_seeds did not say it wrote the wire_decode seeds: $out"
[ "$(count "$fuzz/corpus/wire_decode")" -gt 0 ] || fail "corpus/wire_decode is empty"

if ! command -v python3 >/dev/null; then
    echo "seed.sh: no python3, packet_decode starts from an empty corpus"
elif [ ! -d "$pcaps" ]; then
    echo "seed.sh: $pcaps absent, packet_decode starts from an empty corpus"
else
    python3 "$fuzz/seed_packets.py" "$fuzz/corpus/packet_decode" "$pcaps"/*.pcap "$pcaps"/*.pcapng ||
        fail "seed_packets.py could not write the packet_decode seeds"
    [ "$(count "$fuzz/corpus/packet_decode")" -gt 0 ] ||
        fail "seed_packets.py wrote no packet_decode seed from $pcaps"
fi

# capture_records: the shared captures themselves, the small ones (libFuzzer caps inputs at 4 KB
# by default; run.sh raises it), plus their first 4 KB.
if [ -d "$pcaps" ]; then
    for f in "$pcaps"/*.pcap "$pcaps"/*.pcapng; do
        [ -f "$f" ] || continue
        name=$(basename "$f")
        head -c 4096 "$f" >"$fuzz/corpus/capture_records/head-$name"
        if [ "$(stat -c %s "$f")" -le 65536 ]; then cp "$f" "$fuzz/corpus/capture_records/$name"; fi
    done
    [ "$(count "$fuzz/corpus/capture_records")" -gt 0 ] ||
        fail "no capture_records seed written from $pcaps"
else
    echo "seed.sh: $pcaps absent, capture_records starts from an empty corpus"
fi

# pcapng_records: the pcapng captures, small ones whole, every one's first 4 KB.
zeek_traces="${TAPFLOW_ZEEK_TRACES:-$root/../shared/zeek-corpus/traces}"
for f in "$pcaps"/*.pcapng "$zeek_traces"/*.pcapng; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    head -c 4096 "$f" >"$fuzz/corpus/pcapng_records/head-$name"
    if [ "$(stat -c %s "$f")" -le 65536 ]; then cp "$f" "$fuzz/corpus/pcapng_records/$name"; fi
done
[ "$(count "$fuzz/corpus/pcapng_records")" -gt 0 ] ||
    echo "seed.sh: no pcapng capture found, pcapng_records starts from an empty corpus"

# processor_set: tables in the TFST layout of proto/src/slots.rs (members ascending, slot s owned
# by member s % n, as SlotTable::initial makes them), and a set file.
command -v python3 >/dev/null || fail "python3 is needed to write the processor_set seeds"
python3 - "$fuzz/corpus/processor_set" <<'PY' || fail "could not write the processor_set seeds"
import struct, sys
out = sys.argv[1]
for n in (2, 300):
    members = list(range(0, 2 * n, 2))
    owners = [s % n for s in range(4096)]
    body = b"TFST" + struct.pack("<BIHH", 1, 3, 4096, n) + struct.pack(f"<{n}H", *members)
    body += bytes(owners) if n <= 256 else struct.pack("<4096H", *owners)
    open(f"{out}/table-{n}", "wb").write(body)
open(f"{out}/set.toml", "w").write(
    "initial = [0, 1]\n[processors]\n0 = 'tcp://10.0.0.5:5601'\n1 = 'tcp://10.0.0.6:5601'\n"
    "2 = 'tcp://10.0.0.7:5601'\n[[change]]\nadd = 2\nswitch_at = 1763874010.0\n"
    "[[change]]\nremove = 1\nswitch_at = 1763874070.5\n")
PY
[ "$(count "$fuzz/corpus/processor_set")" -ge 3 ] || fail "corpus/processor_set lacks its 3 seeds"
mkdir -p "$fuzz/corpus/classify"
python3 - "$fuzz/corpus/classify" <<'PY' || fail "could not write the classify seeds"
import struct, sys
out = sys.argv[1]
def seed(name, udp, oport, rport, orig, resp, dgrams=1):
    head = struct.pack("<BHHBH", 1 if udp else 0, oport, rport, dgrams, len(orig))
    open(f"{out}/{name}", "wb").write(head + orig + resp)
seed("ssh", False, 40000, 22, b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-2.0-OpenSSH_8.9\r\n")
seed("http", False, 40000, 80, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
seed("ftp", False, 40000, 21, b"USER a\r\nPASV\r\n",
     b"220 hi\r\n331 pw\r\n227 Entering Passive Mode (10,0,0,2,8,1)\r\n")
sni = b"a.example"
ext = struct.pack(">HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
hello = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack(">H", len(ext)) + ext
hs = b"\x01" + struct.pack(">I", len(hello))[1:] + hello
seed("tls", False, 40000, 443, b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs, b"")
seed("dns", True, 40000, 53, bytes.fromhex("12340100000100000000000001610765786d706c6503636f6d0000010001"),
     bytes.fromhex("12348180000100000000000001610765786d706c6503636f6d0000010001"))
PY
[ "$(count "$fuzz/corpus/classify")" -ge 5 ] || fail "corpus/classify lacks its 5 seeds"
