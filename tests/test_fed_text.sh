#!/usr/bin/env bash
# Federated token models on byte-level text (`mpipe fed --data text:FILE`, issue 19): the clients'
# samples are the training split's windows, dealt out iid or in contiguous stretches; a federation
# of 2-stage clients gives the bits of 1-rank clients; K local steps that make whole epochs give
# the bits of those epochs; the class-based splits are refused with what works instead.
# Usage: test_fed_text.sh path/to/mpipe (run from the repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
# 8000 bytes of a fixed text: 7200 train (1028 windows of T 7, 514 a client), 800 validate.
for i in $(seq 1 600); do printf 'line %d of %d. ' "$i" "$((i * 7 % 13))"; done | head -c 8000 \
    >"$TMP/t.txt"
G="tests/data/gpt_tiny.mp --clients 2 --data text:$TMP/t.txt --rounds 2 --batch 8 --seed 3"
R="mpirun -np 3 --oversubscribe $MPIPE fed"

$R $G --split contiguous --micro-batches 2 --local-steps 20 --save-weights "$TMP/c1.st" \
    >"$TMP/c1.out" 2>"$TMP/c1.err"
mpirun -np 5 --oversubscribe $MPIPE fed $G --split contiguous --local-steps 20 --client-stages 2 \
    --micro-batches 2 --save-weights "$TMP/c2.st" >"$TMP/c2.out" 2>"$TMP/c2.err"
$R $G --split contiguous --micro-batches 2 --local-steps 20 --eval-windows 10 >"$TMP/w10.out" \
    2>/dev/null
claim "text data: every client holds 514 windows, and the run ends with RESULT" bash -c \
    "grep -q 'fed: 2 clients with 514..514 samples each' '$TMP/c1.err' &&
     grep -q '^RESULT test_acc=' '$TMP/c1.out'"
claim "...the server tests on the validation windows (test_loss below ln 256 after 2 rounds)" \
    bash -c "awk '/^round 2\/2/ { for (i = 1; i < NF; i++) if (\$i == \"test_loss\") l = \$(i + 1) }
                  END { exit !(l > 0 && l < 5.545) }' '$TMP/c1.err'"
l10=$(result_field loss <"$TMP/w10.out") l_all=$(result_field loss <"$TMP/c1.out")
claim "...on the first --eval-windows N of them (114 by default here, 10 give another loss)" \
    test -n "$l10" -a -n "$l_all" -a "$l10" != "$l_all"
claim "2-stage clients on text give the same weights as 1-rank clients (M = 2)" bash -c \
    "test -s '$TMP/c1.st' && cmp -s '$TMP/c1.st' '$TMP/c2.st'"

$R $G --split iid --local-epochs 2 --save-weights "$TMP/e2.st" >/dev/null 2>"$TMP/e2.err"
$R $G --split iid --local-steps 130 --save-weights "$TMP/k130.st" >/dev/null 2>&1
$R $G --split iid --local-steps 20 --save-weights "$TMP/k20.st" >/dev/null 2>&1
claim "--local-steps 130 (2 epochs of 65 steps) gives the bits of --local-epochs 2" bash -c \
    "test -s '$TMP/e2.st' && cmp -s '$TMP/e2.st' '$TMP/k130.st'"
claim "...and --local-steps 20 another model" bash -c \
    "test -s '$TMP/k20.st' && ! cmp -s '$TMP/e2.st' '$TMP/k20.st'"
claim "iid and contiguous deal out different windows" bash -c \
    "! cmp -s '$TMP/k20.st' '$TMP/c1.st'"

claim "--split dirichlet on text exits 2, naming what works" exits_with 2 \
    "dirichlet:0.5 deals samples out by class, and text has no classes: use --split iid or" \
    $R $G --split dirichlet:0.5
claim "--split shards on text too" exits_with 2 "shards:2 deals samples out by class" \
    $R $G --split shards:2
finish
