#!/usr/bin/env bash
# e2e_mpi.sh: tokenrec sasrec, finetune and evaluate under mpirun on real LastFM, small models.
#   1. mpirun -np 2 against one process (sasrec; finetune's T5 in 1b, the causal LLM in 1c): the same per-epoch losses and valid HR@10, the same
#      evaluate metrics and recommendations, parameters within 1e-5 relative (and whether
#      they are bitwise equal is printed), the same run settings (no process count in them);
#   2. SIGKILL of rank 1 mid-epoch: mpirun and every rank exit, mpirun non-zero; while both
#      ran, rank 0 alone had the database open; the database is intact; the same command at
#      one process resumes the checkpoint and ends with the model of an uninterrupted run.
# OpenMPI's settings for running as root and for more processes than cores are set here, for
# this test only. Every wait is bounded.
set -u
BIN=${TOKENREC_BIN:?set TOKENREC_BIN to the tokenrec binary}
MPIRUN=${TOKENREC_MPIRUN:-mpirun}
data="${TOKENREC_SHARED:-$(dirname "$0")/../../shared}/datasets"
command -v "$MPIRUN" >/dev/null || { echo "no mpirun: skipped"; exit 77; }
[ -d "$data/lastfm" ] || { echo "no LastFM at $data/lastfm: skipped"; [[ ${CI:-} == true ]] && exit 1; exit 77; }
command -v python3 >/dev/null || { echo "no python3: skipped"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # CI runs as root
export OMPI_MCA_rmaps_base_oversubscribe=1                         # 2 ranks may exceed the cores
export OMPI_MCA_btl_vader_single_copy_mechanism=none               # containers without ptrace rights
export OMP_WAIT_POLICY=PASSIVE TOKENREC_THREADS=1 OPENBLAS_NUM_THREADS=1
T=$(mktemp -d /tmp/tokenrec-e2e-mpi-XXXXXX)
export TOKENREC_E2E_MPI_DIR=$T    # tells this test's processes from other tokenrec ones
MP=""
cleanup() { [ -n "$MP" ] && kill -9 "$MP" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
OPTS=(--dim 32 --blocks 1 --maxlen 50 --epochs 5 --eval-every 1 --batch 128 --seed 7 --threads 1 --shards 4)
q() { sqlite3 "$1" "$2"; }
# compare DB_A DB_B: the kept parameters within 1e-5 relative; prints max diff and bitwise
compare() {
    python3 - "$1" "$2" <<'EOF' || fail "parameters of $1 and $2 differ"
import sqlite3, struct, sys
p = [sqlite3.connect(f).execute("SELECT params FROM sasrec_models").fetchone()[0] for f in sys.argv[1:3]]
a, b = (struct.unpack('%df' % (len(x) // 4), x) for x in p)
assert len(a) == len(b) and len(a) > 0, "shapes differ"
worst = max(abs(x - y) / max(abs(x), abs(y), 1e-6) for x, y in zip(a, b))
print("  %d parameters, max relative difference %.3g, bitwise equal: %s" % (len(a), worst, p[0] == p[1]))
sys.exit(0 if worst <= 1e-5 else 1)
EOF
}
curves() { q "$1" "SELECT group_concat(printf('%s:%d:%.6f', name, step, value), ' ') FROM metrics_log
              WHERE name IN ('sasrec_loss','sasrec_valid_hr10') ORDER BY name, step"; }
evalm() { q "$1" "SELECT group_concat(printf('%s/%s/%d:%.10f', split, metric, k, value), ' ') FROM run_metrics
             WHERE method='sasrec' AND split IN ('valid','test') ORDER BY split, metric, k"; }
recs() { q "$1" "SELECT uid, rank, iid, score FROM recommendations ORDER BY uid, rank" | md5sum; }

"$BIN" ingest --quiet --db "$T/base.db" --dataset lastfm --data-dir "$data" || fail "ingest"
echo "== 1. one process against mpirun -np 2"
cp "$T/base.db" "$T/np1.db"; cp "$T/base.db" "$T/np2.db"
"$BIN" sasrec --db "$T/np1.db" "${OPTS[@]}" --quiet || fail "sasrec, one process"
timeout 300 "$MPIRUN" -np 2 "$BIN" sasrec --db "$T/np2.db" "${OPTS[@]}" --quiet || fail "mpirun -np 2 sasrec"
[ "$(curves "$T/np1.db")" = "$(curves "$T/np2.db")" ] || fail "per-epoch loss or valid HR@10 differ:
$(curves "$T/np1.db")
$(curves "$T/np2.db")"
echo "  per-epoch losses and valid HR@10 equal: $(curves "$T/np1.db" | cut -c1-80)..."
compare "$T/np1.db" "$T/np2.db"
s1=$(q "$T/np1.db" "SELECT params FROM stage_runs WHERE stage='sasrec'")
s2=$(q "$T/np2.db" "SELECT params FROM stage_runs WHERE stage='sasrec'")
[ "$s1" = "$s2" ] || fail "the run settings depend on the process count: $s1 / $s2"
"$BIN" evaluate --db "$T/np1.db" --method sasrec --split both --threads 1 --quiet || fail "evaluate, one process"
timeout 300 "$MPIRUN" -np 2 "$BIN" evaluate --db "$T/np2.db" --method sasrec --split both --threads 1 --quiet || fail "mpirun -np 2 evaluate"
[ -n "$(evalm "$T/np1.db")" ] && [ "$(evalm "$T/np1.db")" = "$(evalm "$T/np2.db")" ] || fail "evaluate metrics differ"
[ "$(recs "$T/np1.db")" = "$(recs "$T/np2.db")" ] || fail "evaluate's recommendations differ"
echo "  evaluate: the same metrics and top-50 lists"
# a command that is not data-parallel refuses clearly
out=$("$MPIRUN" -np 2 "$BIN" info --db "$T/np1.db" 2>&1) && fail "mpirun -np 2 info should fail"
grep -q "does not run under mpirun" <<<"$out" || fail "no clear refusal: $out"
# --shards below the process count: a clear error, nothing run
out=$(timeout 120 "$MPIRUN" -np 2 "$BIN" sasrec --db "$T/base.db" --epochs 1 --shards 1 --quiet 2>&1) && fail "--shards 1 at -np 2 should fail"
grep -q "give --shards 2 or more" <<<"$out" || fail "no clear --shards error: $out"

echo "== 1b. finetune (T5, tiny): one process against mpirun -np 2"
cp "$T/base.db" "$T/ft.db"
"$BIN" cf --db "$T/ft.db" --epochs 10 --eval-every 10 --threads 1 --quiet || fail "cf"
"$BIN" tokenize --db "$T/ft.db" --epochs 3 --threads 1 --quiet || fail "tokenize"
cp "$T/ft.db" "$T/ft1.db"; cp "$T/ft.db" "$T/ft2.db"
FT=(--arch t5 --preset tiny --epochs 1 --hist 10 --batch 64 --max-pos 8 --threads 1 --shards 4 --quiet)
"$BIN" finetune --db "$T/ft1.db" "${FT[@]}" || fail "finetune, one process"
timeout 300 "$MPIRUN" -np 2 "$BIN" finetune --db "$T/ft2.db" "${FT[@]}" || fail "mpirun -np 2 finetune"
ftm() { q "$1" "SELECT group_concat(printf('%s:%d:%.7f', name, step, value), ' ') FROM metrics_log
              WHERE run_id = (SELECT max(id) FROM stage_runs WHERE stage = 'finetune')"; }
[ -n "$(ftm "$T/ft1.db")" ] && [ "$(ftm "$T/ft1.db")" = "$(ftm "$T/ft2.db")" ] || fail "finetune's losses or valid metrics differ:
$(ftm "$T/ft1.db")
$(ftm "$T/ft2.db")"
python3 - "$T/ft1.db" "$T/ft2.db" <<'EOF' || fail "finetune's weights differ beyond 1e-5"
import sqlite3, struct, sys
w = [sqlite3.connect(f).execute("SELECT params FROM models").fetchone()[0] for f in sys.argv[1:3]]
a, b = (struct.unpack('%df' % (len(x) // 4), x) for x in w)
worst = max(abs(x - y) / max(abs(x), abs(y), 1e-6) for x, y in zip(a, b))
print("  finetune: %d weights, max relative difference %.3g, bitwise equal: %s" % (len(a), worst, w[0] == w[1]))
sys.exit(0 if len(a) == len(b) and worst <= 1e-5 else 1)
EOF

echo "== 1c. finetune --arch causal (the default): one process against mpirun -np 2, then evaluate"
cp "$T/ft.db" "$T/fc1.db"; cp "$T/ft.db" "$T/fc2.db"
FC=(--arch causal --d-model 32 --layers 1 --epochs 4 --eval-every 2 --batch 64 --threads 1 --shards 4 --quiet
    --token-init cf+users --lr-schedule cosine --ties shuffle --cf-blend auto)
"$BIN" finetune --db "$T/fc1.db" "${FC[@]}" || fail "causal finetune, one process"
timeout 300 "$MPIRUN" -np 2 "$BIN" finetune --db "$T/fc2.db" "${FC[@]}" || fail "mpirun -np 2 causal finetune"
[ -n "$(ftm "$T/fc1.db")" ] && [ "$(ftm "$T/fc1.db")" = "$(ftm "$T/fc2.db")" ] || fail "the causal finetune's losses or valid metrics differ:
$(ftm "$T/fc1.db")
$(ftm "$T/fc2.db")"
w1=$(q "$T/fc1.db" "SELECT hex(params) FROM models" | md5sum); w2=$(q "$T/fc2.db" "SELECT hex(params) FROM models" | md5sum)
[ "$w1" = "$w2" ] || fail "the causal finetune's weights differ between one process and two"
c1=$(q "$T/fc1.db" "SELECT config FROM models"); c2=$(q "$T/fc2.db" "SELECT config FROM models")
[ "$c1" = "$c2" ] || fail "the causal finetune's stored config (the CF blend's weights) differs: $c1 / $c2"
echo "  causal finetune (ties shuffled, CF blend picked): losses, valid HR@10, weights and config bitwise equal"
"$BIN" evaluate --db "$T/fc1.db" --method tokenrec --quiet || fail "evaluate, one process"
timeout 120 "$MPIRUN" -np 2 "$BIN" evaluate --db "$T/fc2.db" --method tokenrec --quiet || fail "mpirun -np 2 evaluate (causal)"
tm() { q "$1" "SELECT group_concat(printf('%s/%d:%.10f', metric, k, value), ' ') FROM run_metrics WHERE method='tokenrec' AND split='test'
               AND run_id = (SELECT max(id) FROM stage_runs WHERE stage='evaluate')"; }
[ -n "$(tm "$T/fc1.db")" ] && [ "$(tm "$T/fc1.db")" = "$(tm "$T/fc2.db")" ] || fail "evaluate of the causal model differs"

echo "== 2. SIGKILL of rank 1 mid-epoch, resume at one process"
cp "$T/base.db" "$T/k.db"
"$MPIRUN" -np 2 "$BIN" sasrec --db "$T/k.db" "${OPTS[@]}" --quiet >"$T/kill.log" 2>&1 &
MP=$!
for _ in $(seq 600); do           # the first checkpoint (after epoch 1), at most 60 s
    [ "$(q "$T/k.db" "SELECT count(*) FROM checkpoints" 2>/dev/null)" -gt 0 ] 2>/dev/null && break
    kill -0 "$MP" 2>/dev/null || fail "the run ended before its first checkpoint: $(cat "$T/kill.log")"
    sleep 0.1
done
sleep 0.3                         # into epoch 2
r0=""; r1=""
for p in $(pgrep -x tokenrec); do
    r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n "s/^OMPI_COMM_WORLD_RANK=//p")
    grep -qx "TOKENREC_E2E_MPI_DIR=$T" <(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null) || continue
    [ "$r" = 0 ] && r0=$p
    [ "$r" = 1 ] && r1=$p
done
[ -n "$r0" ] && [ -n "$r1" ] || fail "did not find both ranks (rank 0: '$r0', rank 1: '$r1')"
n0=$(ls -l "/proc/$r0/fd" 2>/dev/null | grep -c "$T/k.db")
n1=$(ls -l "/proc/$r1/fd" 2>/dev/null | grep -c "$T/k.db")
[ "$n0" -gt 0 ] || fail "rank 0 does not have the database open"
[ "$n1" = 0 ] || fail "rank 1 opened the database ($n1 descriptors)"
echo "  database descriptors: rank 0 $n0, rank 1 $n1"
kill -9 "$r1"
for _ in $(seq 300); do kill -0 "$MP" 2>/dev/null || break; sleep 0.1; done
kill -0 "$MP" 2>/dev/null && fail "mpirun still runs 30 s after rank 1 was killed"
wait "$MP"; rc=$?; MP=""
[ "$rc" != 0 ] || fail "mpirun exited 0 after a rank was killed"
for _ in $(seq 100); do kill -0 "$r0" 2>/dev/null || break; sleep 0.1; done
kill -0 "$r0" 2>/dev/null && fail "rank 0 still runs after the job stopped"
grep -q "rank 1" "$T/kill.log" || fail "no message names the killed rank: $(cat "$T/kill.log")"
echo "  mpirun exit $rc, every rank gone: $(grep -m1 'rank 1' "$T/kill.log" | sed 's/^ *//')"
[ "$(q "$T/k.db" "PRAGMA integrity_check")" = ok ] || fail "the database is damaged"
[ "$(q "$T/k.db" "SELECT status FROM stage_runs WHERE stage='sasrec'")" = running ] || fail "the run is not resumable"
"$BIN" sasrec --db "$T/k.db" "${OPTS[@]}" >"$T/resume.log" 2>&1 || fail "resume at one process: $(tail -3 "$T/resume.log")"
tr '\r' '\n' <"$T/resume.log" | grep -q "resuming at epoch" || fail "the rerun did not resume: $(tail -3 "$T/resume.log")"
[ "$(curves "$T/k.db")" = "$(curves "$T/np1.db")" ] || fail "the resumed run's curves differ from the uninterrupted run's"
compare "$T/k.db" "$T/np1.db"
echo "  resumed at one process: $(tr '\r' '\n' <"$T/resume.log" | grep -m1 'resuming at epoch'), same model as uninterrupted"
echo "all mpi checks passed"
