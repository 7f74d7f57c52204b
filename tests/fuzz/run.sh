#!/usr/bin/env bash
# Fuzz every reader of outside input with libFuzzer under AddressSanitizer + UBSan.
#   tests/fuzz/run.sh [SECONDS] [TARGET...]     (default: 30 s each, all five targets)
# Builds a clang configuration in $FUZZ_BUILD (default build-fuzz/), makes seed corpora from
# the first lines of the real files in ../shared (never copied into the repository), runs each
# target for SECONDS, and prints the executions per target. A crash, hang (>10 s), leak or
# sanitizer report stops that target, leaves the input in $FUZZ_BUILD/artifacts/, and makes
# the script exit 1: copy the input into tests/fuzz/regress/<target>/ once the reader is fixed.
# A longer run is the same command with more seconds, e.g. `tests/fuzz/run.sh 3600`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_csv fuzz_ingest fuzz_safetensors fuzz_config fuzz_spm)
B=${FUZZ_BUILD:-$root/build-fuzz}
shared=${TOKENREC_SHARED:-$root/../shared}
command -v clang >/dev/null || { echo "run.sh: clang is not installed (apt-get install clang libclang-rt-14-dev)"; exit 1; }

# 1. build: the whole code base instrumented for libFuzzer, ASan and UBSan (UB aborts)
if [ ! -f "$B/build.ninja" ]; then
  CC=clang meson setup "$B" "$root" -Dfuzz=true -Dtests=false -Dnative=false \
    -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args=-fno-sanitize-recover=all >/dev/null
fi
ninja -C "$B" build.ninja >/dev/null   # regenerate first: a build dir configured before a new target
meson compile -C "$B" "${targets[@]}" >/dev/null

# 2. seed corpora: the first 50 lines of the real files, with the targets' selector bytes
C=$B/corpus
mkdir -p "$C"/{fuzz_csv,fuzz_ingest,fuzz_safetensors,fuzz_config,fuzz_spm} "$B/artifacts"
seed() {  # seed TARGET NAME PREFIX(printf format) FILE [LINES]
  local f=$4
  [ -f "$f" ] || return 0
  { printf "$3"; head -n "${5:-50}" "$f"; } > "$C/$1/$2"
}
D=$shared/datasets
lf=$D/lastfm/raw/hetrec2011-lastfm-2k
seed fuzz_csv lastfm-tagged '\x08' "$lf/user_taggedartists-timestamps.dat"
seed fuzz_csv lastfm-artists '\x08' "$lf/artists.dat"
seed fuzz_csv ml1m-movies '\x03' "$D/ml-1m/raw/movies.dat"
seed fuzz_csv ml1m-seq '\x01' "$D/ml-1m/derived/ml-1m_user_sequences.txt" 20
seed fuzz_csv lastfm-tsv '\x08' "$D/lastfm/derived/tokenrec_lastfm_interactions.tsv"
seed fuzz_ingest hetrec '\x00\x04' "$lf/user_taggedartists-timestamps.dat"
seed fuzz_ingest seq-lastfm '\x02\x01' "$D/lastfm/tokenrec/user_sequence.txt" 30
seed fuzz_ingest seq-ml1m '\x02\x02' "$D/ml-1m/derived/ml-1m_user_sequences.txt" 10
seed fuzz_ingest seq-beauty '\x02\x03' "$D/beauty/tokenrec/user_sequence.txt" 30
seed fuzz_ingest tsv '\x03\x88' "$D/lastfm/derived/tokenrec_lastfm_interactions.tsv"
seed fuzz_ingest names-artists '\x04\x08' "$lf/artists.dat"
seed fuzz_ingest names-movies '\x04\x82' "$D/ml-1m/raw/movies.dat"
if [ -f "$D/ml-1m/derived/ml-1m_user_sequences.txt" ]; then   # ratings.dat as ML-1M writes it
  { printf '\x01\x00'; head -n 5 "$D/ml-1m/derived/ml-1m_user_sequences.txt" |
      awk '{for (i = 2; i <= NF; i++) printf "%s::%s::%d::%d\n", $1, $i, 1 + i % 5, 978300000 + i}'; } \
    > "$C/fuzz_ingest/ratings"
fi
for f in "$shared"/testvectors/t5-tiny/*.safetensors; do
  [ -f "$f" ] && head -c 16384 "$f" > "$C/fuzz_safetensors/$(basename "$f")"
done
python3 - "$C" <<'PY'
import json, struct, sys
c = sys.argv[1]
def st(name, tensors, meta=None):
    hdr, data = {}, b""
    for n, (dt, shape, raw) in tensors.items():
        hdr[n] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta: hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode()
    open(f"{c}/fuzz_safetensors/{name}", "wb").write(struct.pack("<Q", len(h)) + h + data)
st("small", {"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), "b": ("I32", [3], struct.pack("<3i", 1, -2, 3)),
             "c": ("F16", [2], b"\x00\x3c\x01\x00"), "d": ("BF16", [1, 1], b"\x80\x3f")}, {"format": "pt"})
st("empty", {}, {})
cfg = {"vocab": 32128, "d_model": 64, "d_kv": 16, "n_heads": 4, "d_ff": 128, "n_enc_layers": 2,
       "n_dec_layers": 1, "rel_buckets": 32, "rel_max_distance": 128, "dropout": 0.1,
       "head_dropout": 0.1, "ln_eps": 1e-6, "head_hidden": 256, "head_out": 64, "dec_len": 20}
open(f"{c}/fuzz_config/tiny", "w").write(json.dumps(cfg))
PY
# kept crash inputs seed their target too
for t in "${targets[@]}"; do
  [ -d "$here/regress/$t" ] && cp -f "$here/regress/$t"/* "$C/$t/" 2>/dev/null || true
done

# 3. fuzz each target for $secs seconds
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
fail=0
for t in "${targets[@]}"; do
  log=$B/$t.log
  if (cd "$B" && "./tests/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=16384 -print_final_stats=1 -artifact_prefix="$B/artifacts/$t-" \
        "$C/$t") >"$log" 2>&1; then status=ok; else status=FAILED; fail=1; fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  printf '%-18s %s  executions %s  %s\n' "$t" "$status" "$execs" "$cov"
  if [ $status = FAILED ]; then grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -8; fi
done
exit $fail
