#!/usr/bin/env bash
# e2e_ui.sh: drive `tokenrec ui` in a detached tmux terminal on a small ingested dataset and
# assert on the captured screen: a missing database, every screen, a user and an item
# lookup, the help, launching stages (a forced ingest; cf when this build has it) and
# seeing their state change, a resize to 80x24, and q. Every wait is bounded.
set -u
BIN=${TOKENREC_BIN:?set TOKENREC_BIN to the tokenrec binary}
command -v tmux >/dev/null || { echo "tmux is not installed: skipped"; exit 77; }
T=$(mktemp -d /tmp/tokenrec-e2e-ui-XXXXXX)
SOCK="$T/tmux.sock"
S=ui
tm() { tmux -u -S "$SOCK" "$@"; }
cleanup() { tm kill-server >/dev/null 2>&1; rm -rf "$T"; }
trap cleanup EXIT
cap() { tm capture-pane -p -t "$S" 2>/dev/null; }
fail() { echo "FAIL: $*"; echo "--- screen ---"; cap; exit 1; }
keys() { tm send-keys -t "$S" "$@"; }
# wait_for TEXT [SECONDS]: poll the screen until it shows TEXT (fixed string)
wait_for() {
    local end=$((SECONDS + ${2:-10}))
    while ((SECONDS < end)); do cap | grep -qF -- "$1" && return 0; sleep 0.2; done
    fail "the screen never showed '$1'"
}
# wait_re REGEX [SECONDS]
wait_re() {
    local end=$((SECONDS + ${2:-10}))
    while ((SECONDS < end)); do cap | grep -qE -- "$1" && return 0; sleep 0.2; done
    fail "the screen never matched /$1/"
}
# A session that only sleeps keeps the tmux server alive while the dashboard's session is
# replaced: killing the last session makes the server exit, and a new-session sent while it
# is still exiting fails with "server exited unexpectedly".
tm new-session -d -s keep "sleep 3600" || { echo "FAIL: tmux could not start"; exit 1; }
# start_ui DB: the dashboard in a fresh 100x30 session; the shell prints its exit status.
start_ui() {
    for _ in 1 2 3; do
        tm kill-session -t "$S" >/dev/null 2>&1
        tm new-session -d -s "$S" -x 100 -y 30 -c "$T" \
            "LANG=C.UTF-8 TERM=xterm-256color '$BIN' ui --db '$1'; echo UI-EXITED-\$?; sleep 60" \
            && return 0
        sleep 1
    done
    fail "tmux could not start the dashboard's session (3 tries)"
}
quit_ui() { keys q; wait_for "UI-EXITED-0" 10; }

# 1. No database: what to do, not a crash.
start_ui "$T/missing.db"
wait_for "No database at"
wait_for "tokenrec ingest --dataset lastfm"
keys 3; wait_for "No database at"
quit_ui
echo "ok: missing database"

# 2. A small dataset from a sequence file.
RANDOM=7
for u in $(seq 0 39); do
    line="u$u"
    for k in $(seq 1 $((6 + u % 9))); do line="$line i$(( (u * 7 + k * 3 + RANDOM % 4) % 30 ))"; done
    echo "$line"
done > "$T/seq.txt"
"$BIN" ingest --file "$T/seq.txt" --format sequence --dataset tiny --kcore 2 --db "$T/d.db" --quiet \
    || fail "ingest of the test dataset failed"

start_ui "$T/d.db"
wait_for "Pipeline"
wait_re "^ ingest +done"
wait_re "^ cf +not run"
wait_for "Elapsed"
echo "ok: pipeline screen"

keys 2
wait_for "Dataset tiny"
wait_for "users 40"
wait_for "Sequence length"
wait_for "Item popularity"
echo "ok: dataset screen"

keys 3
wait_for "uid orig id"
keys / u7 Enter
wait_for "user 7  (original id u7)"
keys l v
wait_for "[Recommendations]"
wait_for "No recommendations yet"
keys v
wait_for "[Prompt]"
wait_for "No prompt yet"
keys / nobody Enter
wait_for "no user 'nobody'"
echo "ok: users screen"

keys 4
wait_for "iid  pop item"
keys / '#3' Enter
wait_for "item 3  (original id"
wait_for "No tokens yet"
echo "ok: items screen"

keys 5
wait_for "run stage"
keys '?'
wait_for "press any key"
keys x
wait_re "run stage"
echo "ok: training screen and help"

# 3. Launch: a forced re-ingest makes run 2; stopping a stage that is not running says so.
keys 1
wait_re "^ ingest +done"
keys F
wait_for "launched ingest on tiny"
wait_for "run 2  started" 30
wait_re "^ ingest +done" 30
keys s
wait_for "ingest is not running"
echo "ok: launched ingest"

if "$BIN" cf --help >/dev/null 2>&1; then
    keys j
    wait_for "cf on tiny: not run"
    keys Enter
    wait_for "launched cf on tiny"
    wait_re "^ cf +(running|done)" 60
    wait_re "^ cf +done" 90
    keys 5
    wait_re "loss \(run [0-9]+\)" 10
    keys 1
    echo "ok: launched cf"
else
    echo "skipped: this build has no cf command"
fi

# 4. Resize to 80x24: the key bar is on the last line, the stages still shown.
tm resize-window -t "$S" -x 80 -y 24
sleep 0.5
wait_re "^ ingest +done"
[ "$(cap | wc -l)" -eq 24 ] || fail "expected 24 lines after the resize"
cap | tail -n 1 | grep -q "Quit" || fail "the key bar is not on the last line"
keys 3
wait_for "uid orig id"
echo "ok: resize"

quit_ui
echo "ok: quit"
