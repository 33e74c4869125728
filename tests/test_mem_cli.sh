#!/usr/bin/env bash
# The memory predictor against the engine's own count (DESIGN.md §10, docs/memory.md): on 2 ranks,
# the activations each rank's "predicted" line gives, at their largest over the ranks, are exactly
# the bytes RESULT's peak_act_bytes measured in slabs and work buffers. zbv at M >= 8 used to hold
# a second receive slab ahead of its forward that nothing predicted. Usage: test_mem_cli.sh mpipe.
MPIPE=$1
. "$(dirname "$0")/lib.sh"
RUN="mpirun -np 2 --oversubscribe"

# Largest "activations N" over the ranks' lines, from a train's stderr and stdout in one file.
predicted_acts() { sed -n 's/^rank [0-9]*: peak_rss_bytes=.*activations \([0-9]*\),.*/\1/p' "$1" |
    sort -n | tail -1; }
acts_match() { # acts_match SCHEDULE M: predicted == measured activation bytes, 1 step of gpt.mp
    local out="$TMP/$1_$2.out"
    $RUN $MPIPE train models/gpt.mp --max-steps 1 --batch $((2 * $2)) --micro-batches "$2" \
        --eval-windows 2 --schedule "$1" >"$out" 2>&1 || { tail -3 "$out"; return 1; }
    local p m
    p=$(predicted_acts "$out")
    m=$(result_field peak_act_bytes <"$out")
    [ -n "$p" ] && [ "$p" = "$m" ] || { echo "  predicted $p, measured $m"; return 1; }
}
claim "zbv, M = 4: predicted activations are the measured bytes" acts_match zbv 4
claim "zbv, M = 8: predicted activations are the measured bytes" acts_match zbv 8
claim "zbv, M = 12: predicted activations are the measured bytes" acts_match zbv 12
claim "interleaved, M = 8: predicted activations are the measured bytes" acts_match interleaved 8
claim "1f1b, M = 8: predicted activations are the measured bytes" acts_match 1f1b 8
finish
