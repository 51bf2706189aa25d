#!/usr/bin/env bash
# Coverage-guided fuzzing of one target with AFL++ through cargo-afl, for a number
# of executions (default 10 million), then its statistics:
#
#   fuzz/afl.sh path 10000000
#
# Installs cargo-afl when missing (it builds AFL++ itself). The instrumented build
# goes to $AFL_TARGET_DIR (default /var/tmp/afl-target), apart from the normal one.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/afl.sh TARGET [EXECUTIONS]}
execs=${2:-10000000}
command -v cargo-afl >/dev/null 2>&1 || cargo install cargo-afl --locked
afl_dir=${AFL_TARGET_DIR:-/var/tmp/afl-target}
CARGO_TARGET_DIR="$afl_dir" cargo afl build --release -p bff-proxy-fuzz --features afl --bin bff-fuzz-afl
seeds=fuzz/out/seeds-$target
out=fuzz/out/afl-$target
rm -rf "$seeds" "$out"
cargo run -q --release -p bff-proxy-fuzz -- seeds "$target" "$seeds"
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1
BFF_FUZZ_TARGET=$target cargo afl fuzz -i "$seeds" -o "$out" -E "$execs" \
    "$afl_dir/release/bff-fuzz-afl" > "$out.log" 2>&1 || true
stats="$out/default/fuzzer_stats"
[ -f "$stats" ] || { echo "$target: AFL++ did not run, see $out.log" >&2; exit 1; }
grep -E '^(execs_done|execs_per_sec|run_time|corpus_count|edges_found|total_edges|saved_crashes|saved_hangs) ' "$stats" | sed "s/^/$target: /"
crashes=$(awk '/^saved_crashes/ {print $3}' "$stats")
[ "$crashes" = "0" ] || { echo "$target: crashes in $out/default/crashes" >&2; exit 1; }
