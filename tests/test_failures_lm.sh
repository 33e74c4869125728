#!/usr/bin/env bash
# A token model's stage failing, for real, under mpirun (issue 16, DESIGN.md §4): a 2-stage GPT
# with its tied embedding split across the stages. kill -9 of the stage holding the head ends the
# job with the survivor saying what it waited for; SIGSTOP of it ends the job through the deadline
# (exit 4, a `waited` line naming the rank, the peer and the micro-batch); each time --resume on
# the stages left, or on one, finishes with the uninterrupted run's exact bytes. Usage:
# test_failures_lm.sh mpipe.
MPIPE=$1
. "$(dirname "$0")/lib.sh"
TAG="mpipe-lm-$$-$RANDOM" # marks this test's ranks, so only they are ever signalled
export MPIPE_TEST_TAG=$TAG
victims=()
cleanup() {
    local p
    for p in "${victims[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
DEADLINE=5
MODEL="$(dirname "$0")/data/gpt_tiny.mp"
python3 -c "
import sys
sys.stdout.buffer.write(bytes((31 * i * i + 7 * i) % 97 + 32 for i in range(60000)))" \
    > "$TMP/text.txt"
S="--data text:$TMP/text.txt --batch 8 --micro-batches 4 --seed 3 --max-steps 400"
S="$S --lr-schedule constant --eval-windows 4 --deadline $DEADLINE"
MPIRUN=(mpirun -np 2 -x MPIPE_TEST_TAG)
train() { "${MPIRUN[@]}" "$MPIPE" train "$MODEL" $S "$@"; }

rank_pid() { # the pid of this test's mpipe process of rank $1
    local p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = mpipe ] || continue
        local env
        env=$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null)
        grep -qx "MPIPE_TEST_TAG=$TAG" <<<"$env" && grep -qx "OMPI_COMM_WORLD_RANK=$1" <<<"$env" &&
            { echo "${p#/proc/}"; return 0; }
    done
    return 1
}
hit() { # hit SIGNAL RANK DIR: once DIR has a checkpoint, signal that rank; prints its pid
    local pid
    for _ in $(seq 600); do [ -e "$3/latest" ] && break; sleep 0.1; done
    [ -e "$3/latest" ] && pid=$(rank_pid "$2") && kill "-$1" "$pid" && echo "$pid"
}
same() { cmp -s "$TMP/ref.st" "$1" || { echo "  $1 differs from the uninterrupted run"; return 1; }; }

train --save-weights "$TMP/ref.st" >"$TMP/out" 2>"$TMP/err"
claim "the uninterrupted 2-stage GPT run finishes" grep -q "steps=400" "$TMP/out"

train --checkpoint "$TMP/k" --checkpoint-every 40 >"$TMP/out" 2>"$TMP/err" &
job=$!
pid=$(hit 9 1 "$TMP/k") && victims+=("$pid")
t0=$(date +%s.%N)
wait $job
rc=$?
took=$(echo "$(date +%s.%N) - $t0" | bc)
claim "kill -9 of the head's stage: the job exits non-zero (got $rc)" test "$rc" -ne 0
claim "... within 2x --deadline (took ${took}s)" test "$(echo "$took < 2 * $DEADLINE" | bc)" = 1
claim "... and the survivor says what it waited for" grep -q "waited" "$TMP/err"
"$MPIPE" train "$MODEL" $S --checkpoint "$TMP/k" --resume --save-weights "$TMP/k.st" \
    >/dev/null 2>"$TMP/err2"
claim "... then --resume on one rank completes with the uninterrupted run's bytes" same "$TMP/k.st"

train --checkpoint "$TMP/s" --checkpoint-every 40 >"$TMP/out" 2>"$TMP/err" &
job=$!
pid=$(hit STOP 1 "$TMP/s") && victims+=("$pid")
t0=$(date +%s.%N)
wait $job
rc=$?
took=$(echo "$(date +%s.%N) - $t0" | bc)
[ -n "${pid:-}" ] && { kill -CONT "$pid" 2>/dev/null; kill -9 "$pid" 2>/dev/null; }
claim "SIGSTOP of the head's stage: exit 4 (got $rc)" test "$rc" -eq 4
claim "... through the deadline, within 2x --deadline + start-up (took ${took}s)" \
    test "$(echo "$took < 2 * $DEADLINE + 5" | bc)" = 1
claim "... a waited line names rank 0, its peer rank 1 and the micro-batch" \
    grep -qE "rank 0 waited .*micro-batch [0-9]+ .*rank 1|rank 0 waited .*rank 1.*micro-batch" \
    "$TMP/err"
train --checkpoint "$TMP/s" --resume --save-weights "$TMP/s.st" >/dev/null 2>"$TMP/err2"
claim "... then --resume on 2 stages completes with the uninterrupted run's bytes" same "$TMP/s.st"
finish
