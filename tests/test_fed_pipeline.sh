#!/usr/bin/env bash
# Pipelined federated clients (`mpipe fed --client-stages P`, issue 19): a federation whose two
# clients are 2-stage pipelines (mpirun -np 5) computes the bits of the same federation with
# one-rank clients at the same micro-batch count, whatever the clients' schedule, including an
# attacker whose noise needs the update's norm across both stages; a failing stage (NaN, or late
# past the round deadline) drops its client from the round while the federation goes on; the
# rank count is checked. Fault injection uses the MPIPE_FED_TEST_* hooks with k.s targets.
# Usage: test_fed_pipeline.sh path/to/mpipe (run from the repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
F="models/tiny_mlp.mp --clients 2 --data synthetic:600 --batch 32 --seed 5 --split dirichlet:0.5"
# models/tiny.mp (conv, dropout, layernorm) puts parameters on both stages of a 2-stage client.
B="models/tiny.mp --clients 2 --data synthetic:600 --batch 32 --seed 5 --split dirichlet:0.5 \
    --rounds 2 --micro-batches 4 --attack 1:noise"

mpirun -np 3 --oversubscribe $MPIPE fed $B --save-weights "$TMP/p1.st" --checkpoint "$TMP/ck" \
    >"$TMP/p1.out" 2>"$TMP/p1.err"
for s in 1f1b interleaved zb1 zbv; do
    mpirun -np 5 --oversubscribe $MPIPE fed $B --client-stages 2 --schedule $s \
        --save-weights "$TMP/p2_$s.st" >"$TMP/p2_$s.out" 2>"$TMP/p2_$s.err"
done
claim "P = 1 clients: RESULT and the final weights are written" bash -c \
    "grep -q '^RESULT' '$TMP/p1.out' && test -s '$TMP/p1.st'"
claim "--save-weights writes the last round's global model (the checkpoint's bytes)" \
    cmp -s "$TMP/p1.st" "$TMP/ck/round-2/global.safetensors"
claim "2-stage 1f1b clients: the same weights, byte for byte, as 1-rank clients" \
    cmp -s "$TMP/p1.st" "$TMP/p2_1f1b.st"
claim "...with interleaved (2 chunks a rank), zb1 and zbv schedules too" bash -c \
    "cmp -s '$TMP/p1.st' '$TMP/p2_interleaved.st' && cmp -s '$TMP/p1.st' '$TMP/p2_zb1.st' &&
     cmp -s '$TMP/p1.st' '$TMP/p2_zbv.st'"
claim "...and the same RESULT" test "$(grep '^RESULT' "$TMP/p1.out")" = \
    "$(grep '^RESULT' "$TMP/p2_1f1b.out")"
claim "...each client's stages hand over through shared memory" bash -c \
    "[ \$(grep -c '^client [12] stage [01]: hand-offs [1-9][0-9]* through shared memory, 0 as MPI' \
        '$TMP/p2_1f1b.err') = 4 ]"
# The other paths: every hand-off as an MPI message (between hosts), and both in one run.
for h in 0 odd; do
    mpirun -np 5 --oversubscribe -x MPIPE_STAGE_SHARED=$h $MPIPE fed $B --client-stages 2 \
        --schedule zbv --save-weights "$TMP/p2_$h.st" >/dev/null 2>"$TMP/p2_$h.err"
done
claim "...as MPI messages and mixed, the same weights" bash -c \
    "cmp -s '$TMP/p1.st' '$TMP/p2_0.st' && cmp -s '$TMP/p1.st' '$TMP/p2_odd.st' &&
     grep -q '^client 1 stage 0: hand-offs 0 through shared memory, [1-9]' '$TMP/p2_0.err' &&
     grep -q '^client 1 stage 0: hand-offs [1-9][0-9]* through shared memory, [1-9]' '$TMP/p2_odd.err'"
claim "...the log names the clients' pipeline" \
    grep -q '^fed: each client is a 2-stage zb1 pipeline, 4 micro-batches a step, layers 1-1 | 2-12' \
    "$TMP/p2_zb1.err"

# A tiny GPT: the tied lm_head's copy of E sits on the other stage than the embedding; the
# clients exchange E's two gradient halves as `train` does, and the server keeps the copies tied.
G="tests/data/gpt_tiny.mp --clients 2 --data synthetic:200 --rounds 2 --batch 8 --micro-batches 2 \
    --attack 1:noise"
mpirun -np 3 --oversubscribe $MPIPE fed $G --save-weights "$TMP/g1.st" >/dev/null 2>&1
mpirun -np 5 --oversubscribe $MPIPE fed $G --client-stages 2 --save-weights "$TMP/g2.st" \
    >/dev/null 2>"$TMP/g2.err"
claim "a token model with a tied head on the other stage: 2-stage clients give the same weights" \
    bash -c "test -s '$TMP/g1.st' && cmp -s '$TMP/g1.st' '$TMP/g2.st' &&
             grep -q 'layers 1-14 | 15-16' '$TMP/g2.err'"

R="mpirun -np 5 --oversubscribe"
MPIPE_FED_TEST_NAN_CLIENT=1.1 $R -x MPIPE_FED_TEST_NAN_CLIENT $MPIPE fed $F --rounds 2 \
    --client-stages 2 >"$TMP/n.out" 2>"$TMP/n.err"
claim "a stage sending NaN weights drops its client: rejected, naming the stage" \
    grep -q 'round 1: client 1 rejected: stage 1: NaN/Inf' "$TMP/n.err"
claim "...the round aggregates the other client alone and the run completes" bash -c \
    "grep -q '^round 2/2 clients 2 weights 1.000' '$TMP/n.err' && grep -q '^RESULT' '$TMP/n.out'"

# Stage 0 of client 2 sleeps 7 s in round 1 (deadline 5 s); client 1 takes 1 s more every round,
# so the rounds after it last long enough for the late stage to come back and its client to
# rejoin. Few samples and one micro-batch a step keep a 2-stage client's round short even on a
# loaded machine (every message between its stages waits for both ranks to be scheduled).
S="models/tiny_mlp.mp --clients 2 --data synthetic:200 --batch 32 --seed 5 --micro-batches 1"
MPIPE_FED_TEST_SLEEP_CLIENT='2.0:7:0,1:1:*' $R -x MPIPE_FED_TEST_SLEEP_CLIENT $MPIPE fed $S \
    --rounds 8 --round-deadline 5 --client-stages 2 >"$TMP/s.out" 2>"$TMP/s.err"
claim "a stage late past the deadline leaves its client out of the round, naming the stage" \
    grep -q 'round 1: client 2 missed the round deadline (5.0 s; stage 0): left out' "$TMP/s.err"
claim "...round 1 aggregates client 1 alone" grep -q '^round 1/8 clients 1 weights 1.000' "$TMP/s.err"
claim "...the late part is discarded and the client rejoins" bash -c \
    "grep -q 'client 2 stage 0 is back: its late update of round 1 was discarded' '$TMP/s.err' &&
     grep -Eq '^round [3-8]/8 clients 1,2 ' '$TMP/s.err' && grep -q '^RESULT' '$TMP/s.out'"

claim "-np that is not 1 + clients x stages exits 2, naming the right -np" exits_with 2 \
    "mpirun -np 5" mpirun -np 3 --oversubscribe $MPIPE fed $F --rounds 1 --client-stages 2
claim "more stages than the model has layers exits 2" exits_with 2 "only 5 layers" \
    mpirun -np 13 --oversubscribe $MPIPE fed $F --rounds 1 --client-stages 6
finish
