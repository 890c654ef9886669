#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each (default 60), then prints one line per
# target with libFuzzer's final stats: executions, exec/s, coverage (cov: edges, ft: features)
# and corpus size. Exits 1 if a target fails to build or finds a crash (the input is saved in
# fuzz/artifacts/<target>/, the log beside it).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Stable Rust is enough: no sanitizer by default (FUZZ_SANITIZER=address needs nightly).
# Seeds come from fuzz/seed.sh when a target's corpus is empty.
set -uo pipefail

secs="${1:-60}"
shift || true
fuzz="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(wire_decode packet_decode capture_records pcapng_records processor_set classify)
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

# Features a target needs (see Cargo.toml).
features_of() {
    case "$1" in
        packet_decode | capture_records | pcapng_records) echo "--features collector" ;;
        *) echo "" ;;
    esac
}

for t in "${targets[@]}"; do
    if [ -z "$(ls -A "corpus/$t" 2>/dev/null)" ]; then
        if ! ./seed.sh; then
            echo "run.sh: seed.sh could not write the seed corpora (above)" >&2
            exit 1
        fi
        break
    fi
done

failed=0
report=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t/fuzz.log"
    # shellcheck disable=SC2046 # features_of gives zero or two words
    if ! cargo fuzz build -s "$sanitizer" $(features_of "$t") "$t"; then
        report+=("$(printf '%-15s BUILD FAILED' "$t")")
        failed=1
        continue
    fi
    echo "== $t: fuzzing for ${secs}s (log: fuzz/$log)"
    # shellcheck disable=SC2046
    cargo fuzz run -s "$sanitizer" $(features_of "$t") "$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    # The final stats line: "#N DONE cov: C ft: F corp: K/SIZE lim: L exec/s: E rss: R".
    last="$(grep -E '^#[0-9]+' "$log" | tail -n 1)"
    execs="$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    corp="$(sed -nE 's/.* corp: ([^ ]+).*/\1/p' <<<"$last")"
    rate="$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log")"
    [ -n "$rate" ] || rate="$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$last")"
    line="$(printf '%-15s %ss  execs %-10s exec/s %-8s cov %-6s ft %-6s corp %s' \
        "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")"
    if [ $rc -ne 0 ]; then
        failed=1
        line="$line  FAILED (exit $rc): $(grep -m1 -oE 'Test unit written to [^ ]+' "$log" || echo "see fuzz/$log")"
        grep -m1 -A3 -E "panicked|ERROR: libFuzzer|deadly signal" "$log" >&2 || tail -n 20 "$log" >&2
    fi
    report+=("$line")
done

echo
echo "fuzz summary (sanitizer: $sanitizer)"
printf '%s\n' "${report[@]}"
exit $failed
