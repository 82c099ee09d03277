#!/usr/bin/env bash
# Fuzzes hashkv's decoders with AFL++ (cargo-afl, stable toolchain).
#
#   fuzz/run.sh TARGET SECONDS     one target (a directory name under fuzz/corpus/)
#   fuzz/run.sh all SECONDS        every target, one after the other
#   FUZZ_JOBS=2 fuzz/run.sh all 30 two targets at a time (one per core)
#
# Needs `cargo install cargo-afl --version 0.18.2 --locked` (the afl crate's version in
# Cargo.lock), which builds AFL++ as it installs: make and a C compiler, no clang or
# LLVM. Builds the targets with `cargo afl build` (overflow checks and debug
# assertions on) into target/afl/, so ordinary builds keep their own artefacts;
# replays fuzz/regressions/TARGET/ through each target; then runs afl-fuzz for
# SECONDS on fuzz/corpus/TARGET/, its findings in target/fuzz-out/TARGET/. Prints per
# target: execs/s, total execs, crashes, hangs, edges covered. Exits 1 if any target
# crashed or hung (naming the inputs), 2 on a usage or build error.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz_dir="$root/fuzz"
bin_dir="$root/target/afl/release"
out_root="$root/target/fuzz-out"
# An input that runs longer than this is a hang: every decoder is linear in its input,
# and afl-fuzz keeps inputs small, so a correct one takes microseconds; a second leaves
# room for a machine loaded by other work.
timeout_ms="${FUZZ_TIMEOUT_MS:-1000}"
jobs="${FUZZ_JOBS:-1}"

usage() {
  echo "usage: $0 TARGET|all SECONDS   (targets: $(ls "$fuzz_dir/corpus" | tr '\n' ' '))" >&2
  exit 2
}

# Runs afl-fuzz on one target for $2 seconds (the binary is built already).
fuzz_one() {
  local target="$1" seconds="$2" out="$out_root/$1"
  rm -rf "$out"
  mkdir -p "$out"
  # AFL_NO_UI: a log, not a screen. AFL_SKIP_CPUFREQ: VMs have no cpufreq governor.
  # AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES: a core_pattern that pipes to a crash
  # handler would otherwise stop afl-fuzz. AFL_NO_AFFINITY: other work on the machine
  # may hold the cores afl-fuzz would bind to.
  if ! AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_NO_AFFINITY=1 cargo afl fuzz -V "$seconds" -t "$timeout_ms" \
    -i "$fuzz_dir/corpus/$target" -o "$out" "$bin_dir/$target" >"$out/afl.log" 2>&1; then
    echo "$target: afl-fuzz failed; the end of $out/afl.log:" >&2
    tail -n 20 "$out/afl.log" >&2
    return 1
  fi
}

# The value of field $2 in afl-fuzz's stats file $1.
stat_field() {
  sed -n "s/^$2 *: *//p" "$1"
}

# Prints one target's figures; returns 1 if it found a crash or a hang.
report() {
  local target="$1" dir="$out_root/$1/default" stats crashes hangs
  stats="$dir/fuzzer_stats"
  if [ ! -f "$stats" ]; then
    printf '%-16s no fuzzer_stats (afl-fuzz did not run)\n' "$target"
    return 1
  fi
  crashes="$(stat_field "$stats" saved_crashes)"
  hangs="$(stat_field "$stats" saved_hangs)"
  printf '%-16s %10s execs/s %12s execs %4s crashes %4s hangs %6s edges\n' "$target" \
    "$(stat_field "$stats" execs_per_sec)" "$(stat_field "$stats" execs_done)" "$crashes" \
    "$hangs" "$(stat_field "$stats" edges_found)"
  if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
    find "$dir/crashes" "$dir/hangs" -type f -name "id:*" 2>/dev/null | sed 's/^/    input: /'
    return 1
  fi
}

# Runs every input of fuzz/regressions/TARGET/ through the built target once.
replay_regressions() {
  local target="$1" f failed=0
  for f in "$fuzz_dir/regressions/$target"/*; do
    [ -f "$f" ] || continue
    if ! "$bin_dir/$target" <"$f" >/dev/null 2>&1; then
      echo "$target: regression input $f fails again:" >&2
      "$bin_dir/$target" <"$f" 2>&1 | head -n 5 >&2 || true
      failed=1
    fi
  done
  return "$failed"
}

# Internal: one target of an `all` run started by xargs.
if [ "${1:-}" = --one ]; then
  fuzz_one "$2" "$3"
  exit
fi

[ $# -eq 2 ] || usage
what="$1"
seconds="$2"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || usage
if [ "$what" = all ]; then
  mapfile -t targets < <(ls "$fuzz_dir/corpus")
elif [ -d "$fuzz_dir/corpus/$what" ]; then
  targets=("$what")
else
  usage
fi
cargo afl --version >/dev/null 2>&1 || {
  echo "cargo-afl is not installed: cargo install cargo-afl --version 0.18.2 --locked" >&2
  exit 2
}

cd "$root"
CARGO_TARGET_DIR="$root/target/afl" cargo afl build --release -p hashkv-fuzz \
  --features afl --bins || exit 2

status=0
for t in "${targets[@]}"; do
  replay_regressions "$t" || status=1
done
# A target whose afl-fuzz failed to start shows up below without stats.
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} "$fuzz_dir/run.sh" --one {} "$seconds" || true
echo "fuzzed ${#targets[@]} target(s) for $seconds s each:"
for t in "${targets[@]}"; do
  report "$t" || status=1
done
exit "$status"
