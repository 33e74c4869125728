#!/usr/bin/env bash
# `mpirun -np 3 mpipe fed` (a server and two clients) on synthetic data: the RESULT line, runs that
# repeat exactly, a client that sleeps past the round deadline left out while the run goes on, a
# client that sends NaN weights or a short message rejected, checkpoints that resume, and usage
# errors (wrong -np) refused with exit 2. Fault injection uses the MPIPE_FED_TEST_* hooks.
# Usage: test_fed.sh path/to/mpipe (run from the repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
RUN="mpirun -np 3 --oversubscribe"
F="models/tiny_mlp.mp --clients 2 --data synthetic:600 --batch 32 --seed 5 --split dirichlet:0.5"

$RUN $MPIPE fed $F --rounds 3 >"$TMP/a.out" 2>"$TMP/a.err"
$RUN $MPIPE fed $F --rounds 3 >"$TMP/b.out" 2>"$TMP/b.err"
claim "RESULT has test_acc, loss, rounds and clients" \
    grep -Eq '^RESULT test_acc=[0-9.]+ loss=[0-9.]+ rounds=3 clients=2$' "$TMP/a.out"
claim "RESULT is printed once (rank 0 only)" test "$(grep -c '^RESULT' "$TMP/a.out")" = 1
claim "one log line per round names clients, weights, train loss and test accuracy" \
    test "$(grep -Ec '^round [0-9]+/3 clients [0-9,]+ weights [0-9.,]+ train_loss .* test_acc' \
        "$TMP/a.err")" = 3
claim "the global model learns (test_acc > 0.5 after 3 rounds)" \
    python3 -c "import sys; sys.exit(not float('$(result_field test_acc <"$TMP/a.out")') > 0.5)"
claim "two identical runs print the same test_acc and loss" \
    test "$(grep '^RESULT' "$TMP/a.out")" = "$(grep '^RESULT' "$TMP/b.out")"

# Client 2 sleeps 3 s in round 1 (deadline 2 s); client 1 takes 0.4 s every round, so the rounds
# after it last long enough for client 2 to come back before the run ends.
MPIPE_FED_TEST_SLEEP_CLIENT='2:3:0,1:0.4:*' $RUN -x MPIPE_FED_TEST_SLEEP_CLIENT $MPIPE fed $F \
    --rounds 12 --round-deadline 2 >"$TMP/s.out" 2>"$TMP/s.err"
claim "a client sleeping past the deadline: the run completes" grep -q '^RESULT' "$TMP/s.out"
claim "...it is left out of round 1" grep -q 'round 1: client 2 missed the round deadline' "$TMP/s.err"
claim "...round 1 aggregates client 1 alone" grep -q '^round 1/12 clients 1 weights 1.000' "$TMP/s.err"
claim "...its late update is discarded and it rejoins" \
    bash -c "grep -q 'client 2 is back: its late update of round 1 was discarded' '$TMP/s.err' &&
             grep -Eq '^round ([3-9]|1[0-2])/12 clients 1,2 ' '$TMP/s.err'"

MPIPE_FED_TEST_NAN_CLIENT=1 $RUN -x MPIPE_FED_TEST_NAN_CLIENT $MPIPE fed $F --rounds 2 \
    >"$TMP/n.out" 2>"$TMP/n.err"
claim "a client sending NaN weights is rejected and logged" \
    grep -q 'client 1 rejected: NaN/Inf' "$TMP/n.err"
claim "...the others continue (client 2 alone, finite RESULT)" bash -c \
    "grep -q '^round 2/2 clients 2 weights 1.000' '$TMP/n.err' && grep -q '^RESULT test_acc=0\.[0-9]' '$TMP/n.out'"
MPIPE_FED_TEST_SHORT_CLIENT=2 $RUN -x MPIPE_FED_TEST_SHORT_CLIENT $MPIPE fed $F --rounds 1 \
    >"$TMP/w.out" 2>"$TMP/w.err"
claim "a reply of the wrong size is rejected, the run completes" bash -c \
    "grep -q 'client 2 rejected: reply of' '$TMP/w.err' && grep -q '^RESULT' '$TMP/w.out'"

$RUN $MPIPE fed $F --rounds 2 --checkpoint "$TMP/ck" >/dev/null 2>&1
$RUN $MPIPE fed $F --rounds 3 --checkpoint "$TMP/ck" --resume >"$TMP/r.out" 2>"$TMP/r.err"
claim "--resume continues after the checkpointed round and ends like an uninterrupted run" bash -c \
    "grep -q 'resumed from .* after round 2' '$TMP/r.err' &&
     test \"\$(grep '^RESULT' '$TMP/r.out')\" = \"\$(grep '^RESULT' '$TMP/a.out')\""

refused() { # refused PATTERN cmd...: exit 2 and the pattern on stderr
    local pat=$1
    shift
    "$@" >/dev/null 2>"$TMP/stderr"
    local rc=$?
    [ $rc -eq 2 ] && grep -q -- "$pat" "$TMP/stderr" || { echo "  got exit $rc: $(head -3 "$TMP/stderr")"; return 1; }
}
claim "-np that is not 1 + clients exits 2" refused "mpirun -np 3" \
    mpirun -np 2 --oversubscribe $MPIPE fed $F --rounds 1
claim "a bad --split exits 2" refused "dirichlet:A" $MPIPE fed $F --rounds 1 --split dirichlet:0
claim "--help documents the flags and the RESULT line" bash -c \
    "$MPIPE fed --help | grep -q -- '--round-deadline' && $MPIPE fed --help | grep -q 'RESULT test_acc'"
finish
