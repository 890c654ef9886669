#!/usr/bin/env bash
# Writes the seed corpora into fuzz/corpus/<target>/ (git-ignored; run.sh calls this when a
# corpus is missing). Seeds are valid inputs the fuzzer mutates from:
# - wire_decode: every collector and processor message kind, from proto/tests/wire.rs
#   (FUZZ_SEED_DIR makes its `fuzz_seeds` test write them);
# - packet_decode: runs of packets from the shared captures in ../shared/pcaps (skipped, with
#   a note, when that folder or python3 is absent);
# - capture_records: the shared captures as files (the small ones whole, every one's first 4 KB).
set -euo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$fuzz")"
pcaps="${TAPFLOW_PCAPS:-$root/../shared/pcaps}"

mkdir -p "$fuzz/corpus/wire_decode" "$fuzz/corpus/packet_decode" "$fuzz/corpus/capture_records"
FUZZ_SEED_DIR="$fuzz/corpus/wire_decode" \
    cargo test --quiet --manifest-path "$root/Cargo.toml" -p tapflow-proto --test wire \
    fuzz_seeds -- --exact --nocapture | grep -E '^wrote' || true

if ! command -v python3 >/dev/null; then
    echo "seed.sh: no python3, packet_decode starts from an empty corpus"
elif [ ! -d "$pcaps" ]; then
    echo "seed.sh: $pcaps absent, packet_decode starts from an empty corpus"
else
    python3 "$fuzz/seed_packets.py" "$fuzz/corpus/packet_decode" "$pcaps"/*.pcap "$pcaps"/*.pcapng
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
fi
