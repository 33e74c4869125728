#!/usr/bin/env bash
# tools/mpipe-run's own logic, fast and without MPI: a fake `mpirun` records each attempt's command
# line and plays a failure (a lost host, a silent host, a hang), so that the rewritten --host,
# --hostfile, -np, --stages, --plan and --rankfile of the next attempt, the attempt timeout and the
# bad-input errors are checked exactly. tests/test_multihost.sh does the same for real.
# Usage: test_mpipe_run.sh path/to/mpipe (run from the repo root).
MPIPE=$(realpath "$1")
. "$(dirname "$0")/lib.sh"
RUN="$(dirname "$0")/../tools/mpipe-run"
export FAKE_DIR="$TMP/fake"
mkdir -p "$TMP/bin" "$FAKE_DIR"
# The fake mpirun. A probe (program `true`) hangs on the hosts in $FAKE_DEAD; attempt N does what
# $FAKE_PLAY says for N: lose-h2 (mpirun's lost-daemon report, exit 205), fail (exit 1), hang
# (with a child, both in its process group), report-hang (a line in $FAKE_CKPT/failures.log, then
# a hang), orphan (exit 137 leaving a child running and a line in failures.log), nockpt (the
# resume's "no valid checkpoint", exit 3), else success.
cat >"$TMP/bin/mpirun" <<'EOF'
#!/usr/bin/env bash
args=("$@") host=
for ((i = 0; i < $#; i++)); do [ "${args[i]}" = --host ] && host=${args[i + 1]}; done
if [ "${args[$# - 1]}" = true ]; then
    echo "$host" >>"$FAKE_DIR/probed"
    case " ${FAKE_DEAD:-} " in *" $host "*) exec sleep 60 ;; esac
    sleep "${FAKE_PROBE_S:-0}" # a loaded machine: every probe slow
    exit 0
fi
n=$(($(cat "$FAKE_DIR/n" 2>/dev/null || echo 0) + 1))
echo $n >"$FAKE_DIR/n"
echo "$*" >"$FAKE_DIR/attempt-$n"
case " ${FAKE_PLAY:-} " in
*" lose-h2:$n "*) printf '  HNP daemon   : [[7,0],0] on node h1\n  Remote daemon: [[7,0],1] on node h2\n' >&2; exit 205 ;;
*" fail:$n "*) exit 1 ;;
*" hang:$n "*) sleep 300 & echo $! >"$FAKE_DIR/child"; sleep 300 ;;
*" nockpt:$n "*) # the resume finds every checkpoint damaged (mpipe train's exit 3)
    echo "mpipe train: rank 0: --resume: no valid checkpoint in X (every one failed its checks)" >&2
    exit 3 ;;
*" report-hang:$n "*) # a rank reported its failure, mpirun waits on a silent host
    echo "rank 0 on host h1: rank 0 waited 5 s for x from rank 1" >>"${FAKE_CKPT:?}/failures.log"
    sleep 300 & echo $! >"$FAKE_DIR/child"; sleep 300 ;;
*" rank-killed:$n "*) # a rank killed with -9: mpirun says so and exits 128 + 9
    echo "mpirun noticed that process rank 1 with PID 0 on node h1 exited on signal 9 (Killed)." >&2
    exit 137 ;;
*" orphan:$n "*) # mpirun killed under its ranks: one outlives it, one reported its end
    sleep 300 & echo $! >"$FAKE_DIR/child"
    echo "rank 1 on host h1: rank 1 lost its launcher (mpirun, or this host's orted, ended)" \
        >>"${FAKE_CKPT:?}/failures.log"
    exit 137 ;;
esac
exit 0
EOF
chmod +x "$TMP/bin/mpirun"
FAKE="$TMP/bin/mpirun"

fresh() { # fresh DIR: a checkpoint dir whose newest manifest has M 4, batch 64; a clean fake
    rm -rf "$1" "${FAKE_DIR:?}"/*
    mkdir -p "$1/step-32"
    printf '{\n  "layout": {\n    "M": 4,\n    "batch": 64,\n    "P": 3\n  }\n}\n' >"$1/step-32/manifest.json"
    ln -s step-32 "$1/latest"
}
# PID $1 is alive and not a zombie. /proc/PID/stat is read once: a process killed between two reads
# (a test for the file, then its state) made the state empty, and "not Z", so an ended process
# counted as running (a soak beside a busy loop: its 7th run).
running() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) && [ -n "$s" ] || return 1
    s=${s##*) } # past the command name, which may hold spaces
    [ "${s%% *}" != Z ]
}
export -f running
has() { # has FILE WORDS: the recorded command line in FILE contains WORDS (as whole words)
    grep -q -- " $2 " <<<" $(cat "$1") " || { echo "  $1: $(cat "$1")"; return 1; }
}
T="models/tiny_mlp.mp --data synthetic:64 --batch 64"

claim "--attempt-timeout soon: exit 2" refused "needs an integer" \
    "$RUN" --attempt-timeout soon -- "$FAKE" -np 2 "$MPIPE" train $T --checkpoint "$TMP/c"
claim "--retries -1: exit 2" refused "needs an integer" \
    "$RUN" --retries -1 -- "$FAKE" -np 2 "$MPIPE" train $T --checkpoint "$TMP/c"
claim "--probe-timeout without a value: exit 2" refused "needs an integer" "$RUN" --probe-timeout
claim "a train command without --checkpoint: exit 2" refused "needs --checkpoint" \
    "$RUN" -- "$FAKE" -np 2 "$MPIPE" train $T
claim "an unreadable --hostfile: exit 2" refused "cannot read the hostfile" \
    "$RUN" -- "$FAKE" -np 2 --hostfile "$TMP/none" "$MPIPE" train $T --checkpoint "$TMP/c"
claim "a command that is not mpipe train: exit 2" refused "no 'mpipe train'" \
    "$RUN" -- "$FAKE" -np 2 sleep 1 --checkpoint "$TMP/c"

# mpirun reports a lost daemon: that host leaves --host, -np and --stages follow, and the
# wrapper's `-n 5` (nice) is not taken for mpirun's -n.
C="$TMP/c1"
fresh "$C"
FAKE_PLAY=lose-h2:1 "$RUN" --retries 1 -- nice -n 5 "$FAKE" -np 3 --host h1,h2,h3 "$MPIPE" train $T \
    --stages 3 --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "a host mpirun lost is dropped: the restart runs on the others (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && grep -q 'host h2 is lost (mpirun lost its daemon)' '$TMP/err' &&
             grep -q 'hosts h1,h2,h3 -> h1,h3' '$TMP/err'"
second_has() { # second_has WORDS...: attempt 2's command line has each of WORDS
    local w
    for w in "$@"; do has "$FAKE_DIR/attempt-2" "$w" || return 1; done
}
claim "... with --host h1,h3 -np 2 --stages 2" second_has "-np 2 --host h1,h3" "--stages 2"
claim "... leaving the wrapper's -n 5 alone" grep -q "attempt 2: nice -n 5 $FAKE -np 2 " "$TMP/err"
claim "... resuming with the checkpoint's --micro-batches and --batch" \
    bash -c "grep -q -- '--batch 64 .*--micro-batches 4 --resume' '$FAKE_DIR/attempt-2'"
claim "... having probed only the hosts mpirun did not name" \
    bash -c "[ \"\$(sort '$FAKE_DIR/probed' | paste -sd, -)\" = h1,h3 ]"

# A host that went silent is named by nobody: its probe times out. The hostfile is rewritten.
C="$TMP/c2"
fresh "$C"
printf '# two hosts\nh1 slots=2\nh2 slots=2 # the bad one\n' >"$TMP/hosts"
FAKE_PLAY=fail:1 FAKE_DEAD=h2 "$RUN" --retries 1 --probe-timeout 1 -- "$FAKE" -np 4 \
    --hostfile "$TMP/hosts" "$MPIPE" train $T --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "a host that fails its probe is dropped from the hostfile (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && grep -q \"host h2 is lost (did not run 'true'\" '$TMP/err' &&
             grep -q -- '-np 2 --hostfile $C/hosts-2 ' '$FAKE_DIR/attempt-2' &&
             [ \"\$(grep -v '^#' '$C/hosts-2')\" = 'h1 slots=2' ]"

# On a loaded machine every probe may take longer than --probe-timeout: when no host has answered
# by then, the probes get up to 4x longer, and slow is not lost. (A silent host among answering
# ones is still dropped at --probe-timeout: the claim above.)
C="$TMP/c2b"
fresh "$C"
FAKE_PLAY=fail:1 FAKE_PROBE_S=2 "$RUN" --retries 1 --probe-timeout 1 -- "$FAKE" -np 2 \
    --host h1,h2 "$MPIPE" train $T --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "every probe slower than --probe-timeout, none silent: no host dropped (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && ! grep -q 'is lost' '$TMP/err' &&
             grep -q -- '-np 2 --host h1,h2 ' '$FAKE_DIR/attempt-2'"

# A rank died, every host answers: same hosts, same ranks. With --keep-hosts no host is dropped.
C="$TMP/c3"
fresh "$C"
FAKE_PLAY=fail:1 "$RUN" --retries 1 -- "$FAKE" -np 3 --host h1,h2,h3 "$MPIPE" train $T \
    --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
claim "a failed rank on live hosts: the restart keeps hosts and ranks" \
    grep -q -- '-np 3 --host h1,h2,h3 ' "$FAKE_DIR/attempt-2"
fresh "$C"
FAKE_PLAY=lose-h2:1 "$RUN" --retries 1 --keep-hosts -- "$FAKE" -np 3 --host h1,h2,h3 "$MPIPE" \
    train $T --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
claim "--keep-hosts: a lost host stays, and nothing is probed" bash -c \
    "grep -q -- '-np 3 --host h1,h2,h3 ' '$FAKE_DIR/attempt-2' && [ ! -e '$FAKE_DIR/probed' ]"

# Died before the first checkpoint: the fresh start takes the first attempt's M from
# DIR/layout.json, without --resume; with no layout.json, no M. The file is the real trainer's
# (--max-steps 0 starts, writes it, and leaves no checkpoint).
C="$TMP/c6"
rm -rf "$C" "${FAKE_DIR:?}"/*
"$MPIPE" train models/tiny_mlp.mp --data synthetic:96 --batch 96 --micro-batches 6 --max-steps 0 \
    --checkpoint "$C" >/dev/null 2>&1
claim "mpipe train writes DIR/layout.json as it starts, before any checkpoint" \
    bash -c "[ -f '$C/layout.json' ] && [ ! -e '$C/latest' ]"
FAKE_PLAY=fail:1 "$RUN" --retries 1 -- "$FAKE" -np 3 --host h1,h2,h3 "$MPIPE" train \
    models/tiny_mlp.mp --data synthetic:96 --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
claim "no checkpoint yet: the restart pins layout.json's --micro-batches and --batch" \
    bash -c "grep -q -- '--micro-batches 6' '$FAKE_DIR/attempt-2' &&
             grep -q -- '--batch 96' '$FAKE_DIR/attempt-2' && ! grep -q -- '--resume' '$FAKE_DIR/attempt-2'"
rm -rf "$C" "${FAKE_DIR:?}"/*
mkdir -p "$C"
FAKE_PLAY=fail:1 "$RUN" --retries 1 -- "$FAKE" -np 3 --host h1,h2,h3 "$MPIPE" train \
    models/tiny_mlp.mp --data synthetic:96 --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
claim "... and without layout.json the restart adds no M" \
    bash -c "! grep -q -- '--micro-batches' '$FAKE_DIR/attempt-2'"

# A plan with its rankfile is re-made for the hosts left; --shrink does not shrink further.
C="$TMP/c4"
fresh "$C"
printf 'h1 slots=1\nh2 slots=1\nh3 slots=1\n' >"$TMP/hosts3"
"$MPIPE" plan models/tiny_mlp.mp --stages 3 --batch 64 --micro-batches 4 --hosts "$TMP/hosts3" \
    --out "$TMP/plan.json" --rankfile "$TMP/rf" >/dev/null
FAKE_PLAY=lose-h2:1 "$RUN" --retries 1 --shrink -- "$FAKE" -np 3 --hostfile "$TMP/hosts3" \
    --rankfile "$TMP/rf" "$MPIPE" train $T --plan "$TMP/plan.json" --checkpoint "$C" \
    >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "--plan and --rankfile are re-made on the hosts left (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && grep -q -- '-np 2 .*--rankfile $C/rankfile-2 .*--plan $C/plan-2.json' \
             '$FAKE_DIR/attempt-2' && grep -q '=h3 ' '$C/rankfile-2' && ! grep -q '=h2 ' '$C/rankfile-2'"
claim "... a plan for 2 stages" grep -q '"P": 2\|"stages": 2\|P=2' "$C/plan-2.json"

# Only a lost host is left: nothing to restart on.
C="$TMP/c5"
fresh "$C"
FAKE_PLAY=lose-h2:1 "$RUN" --retries 3 -- "$FAKE" -np 2 --host h2:2 "$MPIPE" train $T \
    --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "the only host lost: no restart, mpirun's exit code (got $rc)" \
    bash -c "[ $rc -eq 205 ] && grep -q 'no hosts left' '$TMP/err' && [ ! -e '$FAKE_DIR/attempt-2' ]"

# An attempt that hangs (mpirun waiting on a silent daemon) is ended at --attempt-timeout, with
# everything in its process group, and retried; the last one's exit is 4. The hangs would last 300 s
# each: well under a minute shows the timeout ended them (on a loaded machine, ending a process
# group and scanning /proc take seconds, so the bound is not the 2 s of the timeouts).
C="$TMP/c6"
fresh "$C"
t0=$(date +%s.%N)
FAKE_PLAY="hang:1 hang:2" "$RUN" --retries 1 --attempt-timeout 1 -- "$FAKE" -np 2 "$MPIPE" train \
    $T --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
took=$(echo "$(date +%s.%N) - $t0" | bc)
claim "--attempt-timeout 1: two hung attempts end with exit 4 (got $rc, ${took}s)" \
    bash -c "[ $rc -eq 4 ] && [ \$(grep -c 'after --attempt-timeout 1s' '$TMP/err') -eq 2 ] &&
             [ \"\$(echo '$took < 30' | bc)\" = 1 ]"
claim "... and no process of the attempts is left" eval '! running "$(cat "$FAKE_DIR/child")"'

# A rank reported a failure and mpirun hangs (a silent host): the attempt is ended --linger seconds
# after the report, without any --attempt-timeout, and retried.
C="$TMP/c9"
fresh "$C"
FAKE_CKPT=$C FAKE_PLAY=report-hang:1 "$RUN" --retries 1 --linger 1 -- "$FAKE" -np 2 "$MPIPE" \
    train $T --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "a failure reported, mpirun hanging: ended after --linger 1, then the restart (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && grep -q 'had not ended the job 1s later' '$TMP/err' &&
             [ -e '$FAKE_DIR/attempt-2' ] && ! running $(cat "$FAKE_DIR/child")"

# The only checkpoint is damaged: the resume mpipe-run added fails with exit 3, and it starts over
# without --resume, M and batch pinned (the same numbers); an exit 3 of its own is not retried.
C="$TMP/c10"
fresh "$C"
FAKE_PLAY="fail:1 nockpt:2" "$RUN" --retries 3 -- "$FAKE" -np 2 "$MPIPE" train $T \
    --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "every checkpoint damaged: the next attempt starts over without --resume (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && grep -q -- ' --resume' '$FAKE_DIR/attempt-2' &&
             ! grep -q -- --resume '$FAKE_DIR/attempt-3' &&
             grep -q -- '--micro-batches 4' '$FAKE_DIR/attempt-3' &&
             grep -q 'no checkpoint in $C passed its checks' '$TMP/err'"
fresh "$C"
FAKE_PLAY="nockpt:1" "$RUN" --retries 3 -- "$FAKE" -np 2 "$MPIPE" train $T --checkpoint "$C" \
    --resume >"$TMP/out" 2>"$TMP/err"
claim "... but the user's own --resume failing so is not retried (exit $?)" \
    bash -c "[ ! -e '$FAKE_DIR/attempt-2' ] && grep -q 'not retried' '$TMP/err'"

# mpirun killed: a rank it leaves behind is ended before the restart (it must not write checkpoints
# beside the next attempt), and what the ranks wrote to DIR/failures.log is shown.
C="$TMP/c8"
fresh "$C"
FAKE_CKPT=$C FAKE_PLAY=orphan:1 "$RUN" --retries 1 -- "$FAKE" -np 2 "$MPIPE" train $T \
    --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "mpirun killed under its ranks: the rank left running is ended, then the restart (exit $rc)" \
    bash -c "[ $rc -eq 0 ] && grep -q 'processes of the attempt still running: ending them' '$TMP/err' &&
             [ -e '$FAKE_DIR/attempt-2' ] && ! running $(cat "$FAKE_DIR/child")"
claim "... and the ranks' own report (DIR/failures.log) is shown" \
    grep -q "mpipe-run: reported by rank 1 on host h1: rank 1 lost its launcher" "$TMP/err"
claim "... and mpipe-run itself says mpirun was ended by a signal: the job lost its launcher" \
    grep -q "mpipe-run: attempt 1: mpirun was ended by SIGKILL and reported nothing: the job lost its launcher" "$TMP/err"
# A rank killed: mpirun reports it and exits 137 as well; that is not mpirun's own end.
C="$TMP/c9"
fresh "$C"
FAKE_CKPT=$C FAKE_PLAY=rank-killed:1 "$RUN" --retries 1 -- "$FAKE" -np 2 "$MPIPE" train $T \
    --checkpoint "$C" >"$TMP/out" 2>"$TMP/err"
claim "a rank killed (mpirun's report, exit 137): not called mpirun's own end" \
    bash -c "[ -e '$FAKE_DIR/attempt-2' ] && ! grep -q 'mpirun was ended by' '$TMP/err'"

# SIGTERM to the supervisor reaches the attempt's process group, and nothing is retried.
C="$TMP/c7"
fresh "$C"
FAKE_PLAY=hang:1 "$RUN" --retries 3 -- "$FAKE" -np 2 "$MPIPE" train $T --checkpoint "$C" \
    >"$TMP/out" 2>"$TMP/err" &
sup=$!
for _ in $(seq 50); do [ -s "$FAKE_DIR/child" ] && break; sleep 0.1; done
kill -TERM $sup
wait $sup
rc=$?
claim "SIGTERM to mpipe-run ends the attempt and is not retried (exit $rc)" \
    bash -c "[ $rc -eq 143 ] && grep -q 'stopped by SIGTERM' '$TMP/err' && [ ! -e '$FAKE_DIR/attempt-2' ]"
claim "... leaving no process of it" eval '! running "$(cat "$FAKE_DIR/child")"'
finish
