#!/usr/bin/env bash
# `mpirun -np 3 mpipe fed` (a server and two clients) on synthetic data: the RESULT line, runs that
# repeat exactly, a client that sleeps past the round deadline left out while the run goes on, a
# client that sends NaN weights or a short message rejected, checkpoints that resume (with a server
# optimizer's state and the privacy accountant), --save-weights, DP's epsilon on RESULT, robust
# rules against an attacker, --min-clients, and usage errors refused with exit 2. Fault injection
# uses the MPIPE_FED_TEST_* hooks. Pipelined clients: test_fed_pipeline.sh.
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

# A server optimizer and DP-FedAvg: the checkpoint holds Adam's state and the accountant's curve,
# so 2 rounds + resume end with the bits, epsilon and weights of 3 uninterrupted rounds.
D="$F --server-opt adam --server-lr 0.003 --clip-update 0.5 --noise-multiplier 0.3"
$RUN $MPIPE fed $D --rounds 3 --save-weights "$TMP/d3.st" >"$TMP/d3.out" 2>"$TMP/d3.err"
$RUN $MPIPE fed $D --rounds 2 --checkpoint "$TMP/dk" >/dev/null 2>&1
$RUN $MPIPE fed $D --rounds 3 --checkpoint "$TMP/dk" --resume --save-weights "$TMP/dr.st" \
    >"$TMP/dr.out" 2>"$TMP/dr.err"
claim "--noise-multiplier: RESULT adds epsilon and delta (default delta 1/clients^1.1)" \
    grep -Eq '^RESULT test_acc=[0-9.]+ loss=[0-9.]+ rounds=3 clients=2 epsilon=[0-9.]+ delta=0.467$' \
    "$TMP/d3.out"
claim "...every round's log line reports the epsilon spent so far, growing" bash -c \
    "grep -o 'epsilon [0-9.]*' '$TMP/d3.err' | awk '{ if (\$2 <= last) exit 1; last = \$2 } END { exit NR != 3 }'"
claim "...the last round's epsilon is RESULT's" test "$(grep -o 'epsilon [0-9.]*' "$TMP/d3.err" |
    tail -1 | cut -d' ' -f2)" = "$(result_field epsilon <"$TMP/d3.out")"
claim "--server-opt adam with DP resumes to the uninterrupted RESULT (epsilon included)" \
    test "$(grep '^RESULT' "$TMP/dr.out")" = "$(grep '^RESULT' "$TMP/d3.out")"
claim "...and to the same weights, byte for byte (--save-weights)" cmp -s "$TMP/d3.st" "$TMP/dr.st"
claim "...the checkpoint holds the server optimizer's state" \
    test -s "$TMP/dk/latest/server_m.safetensors" -a -s "$TMP/dk/latest/server_v.safetensors"
claim "resuming with another --server-opt is a checkpoint error (exit 3)" exits_with 3 \
    "written with --server-opt adam, not yogi" $RUN $MPIPE fed $F --rounds 3 --server-opt yogi \
    --checkpoint "$TMP/dk" --resume

# One of five clients sends -10 times its update: the mean collapses, the robust rules do not.
A="models/tiny_mlp.mp --clients 5 --data synthetic:1000 --batch 32 --seed 5 --rounds 3 \
    --attack 1:scale:-10"
R5="mpirun -np 6 --oversubscribe"
$R5 $MPIPE fed $A >"$TMP/a0.out" 2>"$TMP/a0.err"
$R5 $MPIPE fed $A --aggregate median >"$TMP/a1.out" 2>/dev/null
$R5 $MPIPE fed $A --aggregate krum:1 >"$TMP/a2.out" 2>"$TMP/a2.err"
claim "--attack 1:scale:-10: the attacker is named from the seed" grep -q '^fed: clients 2 attack' \
    "$TMP/a0.err"
claim "...FedAvg collapses (test_acc < 0.5; 1.0 without the attack)" python3 -c \
    "import sys; sys.exit(not float('$(result_field test_acc <"$TMP/a0.out")') < 0.5)"
claim "...median and krum:1 keep test_acc > 0.9" python3 -c "import sys; sys.exit(not (
    float('$(result_field test_acc <"$TMP/a1.out")') > 0.9 and
    float('$(result_field test_acc <"$TMP/a2.out")') > 0.9))"
claim "...krum never picks the attacker (its weight is 0 every round)" bash -c \
    "test \$(grep -Ec '^round [0-9]/3 clients 1,2,3,4,5 weights [01].000,0.000,[01].000,' '$TMP/a2.err') = 3"

# --min-clients 1: the round closes at the first accepted update instead of waiting for client 2.
MPIPE_FED_TEST_SLEEP_CLIENT='2:3:0' $RUN -x MPIPE_FED_TEST_SLEEP_CLIENT $MPIPE fed $F --rounds 2 \
    --min-clients 1 >"$TMP/m.out" 2>"$TMP/m.err"
claim "--min-clients 1: round 1 closes with client 1 alone, client 2 named as left out" bash -c \
    "grep -q '^round 1/2 clients 1 weights 1.000' '$TMP/m.err' &&
     grep -q 'round 1: client 2 left out: the round closed with 1 updates' '$TMP/m.err' &&
     grep -q '^RESULT' '$TMP/m.out'"

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
claim "krum:1 with 2 clients exits 2 (it needs more than 2f + 2)" refused "needs at least 5" \
    $MPIPE fed $F --rounds 1 --aggregate krum:1
claim "--noise-multiplier without --clip-update exits 2" refused "needs --clip-update" \
    $MPIPE fed $F --rounds 1 --noise-multiplier 1
claim "a bad --attack exits 2" refused "K:signflip" $MPIPE fed $F --rounds 1 --attack 1:flip
# Ranks given different inputs (mpirun's MPMD form: rank 2 alone gets another model or --data):
# the rank that found the error says what it is, rank 0 says that the ranks disagree, and nobody
# waits (a client given another --data hung the job until the server's wait ran out).
printf 'input 784\ndense 10 x\n' >"$TMP/bad.mp"
claim "a model file only rank 2 cannot parse: rank 2 names the file and line, exit 2" \
    refused "rank 2: .*bad.mp:2: dense" timeout 120 mpirun --oversubscribe -np 2 $MPIPE fed $F \
    --rounds 1 : -np 1 $MPIPE fed "$TMP/bad.mp" --clients 2 --rounds 1
claim "...data only rank 2 cannot read: rank 2 says it, rank 0 says the ranks disagree, exit 3" \
    bash -c "timeout 120 mpirun --oversubscribe -np 2 $MPIPE fed $F --rounds 1 : -np 1 $MPIPE fed \
             $F --rounds 1 --data mnist-dir:$TMP/none >/dev/null 2>'$TMP/mpmd.err'
             test \$? -eq 3 && grep -q 'rank 2: $TMP/none/train-labels-idx1-ubyte: cannot read' \
             '$TMP/mpmd.err' && grep -q 'rank 0: 1 of the 3 ranks found an error' '$TMP/mpmd.err'"
claim "...a flag value only rank 2 finds wrong: rank 2 names it, exit 2" \
    refused "rank 2: --aggregate krum:1 needs at least 5" timeout 120 mpirun --oversubscribe \
    -np 2 $MPIPE fed $F --rounds 1 : -np 1 $MPIPE fed $F --rounds 1 --aggregate krum:1
# The server writes --save-weights after the last round: a path it cannot write is said before
# round 1 (it was found only after every round was trained, then exit 3 and no weights).
claim "--save-weights into a missing directory exits 3 before round 1, said once" bash -c \
    "$RUN $MPIPE fed $F --rounds 2 --save-weights '$TMP/nodir/w.st' >/dev/null 2>'$TMP/nw.err';
     [ \$? -eq 3 ] && [ \$(grep -c 'save-weights $TMP/nodir/w.st: cannot write' '$TMP/nw.err') = 1 ] &&
     ! grep -q '^round 1' '$TMP/nw.err'"
claim "--help documents the flags and the RESULT line" bash -c \
    "$MPIPE fed --help | grep -q -- '--round-deadline' && $MPIPE fed --help | grep -q 'RESULT test_acc' &&
     $MPIPE fed --help | grep -q -- '--client-stages' && $MPIPE fed --help | grep -q 'epsilon='"
finish
