#!/usr/bin/env bash
# `mpirun -np 2 mpipe train` as users run it: every schedule's weights equal the one-rank run's
# bytes, the RESULT line reports the pipeline, and layout mistakes are refused with exit 2 and rank
# 0's message.
# Usage: test_pipeline_cli.sh path/to/mpipe (run from the repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
S="--data synthetic:256 --batch 32 --seed 3 --max-steps 3"
RUN="mpirun -np 2 --oversubscribe"

$MPIPE train models/cnn.mp $S --micro-batches 4 --save-weights "$TMP/ref.st" >/dev/null 2>&1
for sch in gpipe 1f1b interleaved zb1 zbv; do
    $RUN $MPIPE train models/cnn.mp $S --micro-batches 4 --schedule $sch \
        --save-weights "$TMP/$sch.st" >"$TMP/$sch.out" 2>&1
    claim "2-stage $sch CNN weights are byte-identical to one rank" cmp -s "$TMP/ref.st" "$TMP/$sch.st"
done
# The hand-offs: through shared memory on one host (the default, above), as MPI messages (between
# hosts: MPIPE_STAGE_SHARED=0), and both in one run (odd micro-batches as messages, tests only).
for how in 0 odd; do
    for sch in gpipe 1f1b zbv; do
        $RUN -x MPIPE_STAGE_SHARED=$how $MPIPE train models/cnn.mp $S --micro-batches 4 \
            --schedule $sch --save-weights "$TMP/$sch-$how.st" >"$TMP/$sch-$how.out" 2>&1
        claim "2-stage $sch CNN, hand-offs MPIPE_STAGE_SHARED=$how: the same bytes" \
            cmp -s "$TMP/ref.st" "$TMP/$sch-$how.st"
    done
done
# 1F1B on 2 stages never sends into a slot before its last message was taken: the activation of
# micro-batch m + 2 follows B of m, which took m's gradient, sent after F of m took m's activation.
hands() { grep -c "^rank [01]: hand-offs $1 through shared memory, $2 as MPI messages" "$3"; }
claim "1f1b: each rank's 12 hand-offs (3 steps of 4) all through shared memory" \
    test "$(hands 12 0 "$TMP/1f1b.out")" = 2
claim "MPIPE_STAGE_SHARED=0: all 12 as MPI messages" test "$(hands 0 12 "$TMP/1f1b-0.out")" = 2
claim "MPIPE_STAGE_SHARED=odd: 6 and 6" test "$(hands 6 6 "$TMP/1f1b-odd.out")" = 2
claim "RESULT under mpirun reports 2 stages" test "$(result_field stages < "$TMP/1f1b.out")" = 2
claim "RESULT is printed once (rank 0 only)" test "$(grep -c '^RESULT' "$TMP/1f1b.out")" = 1

$RUN $MPIPE train models/mlp.mp $S --micro-batches 4 --schedule zb1 --trace "$TMP/t.json" \
    >/dev/null 2>&1
claim "--trace has a track per rank" python3 -c "
import json; ev = json.load(open('$TMP/t.json'))['traceEvents']
assert {e['tid'] for e in ev if e.get('ph') == 'X'} == {0, 1}"

claim "ranks with different flags are refused at start-up" refused "different" \
    mpirun --oversubscribe -np 1 $MPIPE train models/mlp.mp $S --lr 0.01 : \
    -np 1 $MPIPE train models/mlp.mp $S --lr 0.02
# Two plans of the same stage count cut differently: before the agreement counted the cuts, every
# relu of the MLP having the same width, this trained a wrong model without a word.
$MPIPE plan models/mlp.mp --stages 2 --out "$TMP/cut_a.json" >/dev/null 2>&1
python3 -c "
import json, sys; p = json.load(open(sys.argv[1]))
p['stages'][0]['last_layer'] -= 2; p['stages'][1]['first_layer'] -= 2
json.dump(p, open(sys.argv[2], 'w'))" "$TMP/cut_a.json" "$TMP/cut_b.json"
claim "ranks given plans with different cuts are refused at start-up" refused "different.*plan" \
    mpirun --oversubscribe -np 1 $MPIPE train models/mlp.mp $S --plan "$TMP/cut_a.json" : \
    -np 1 $MPIPE train models/mlp.mp $S --plan "$TMP/cut_b.json"
echo '{broken' >"$TMP/broken.json"
claim "a plan file only rank 1 cannot read: rank 1 says what is wrong with it" \
    refused "rank 1: .*broken.json:1: not JSON" \
    mpirun --oversubscribe -np 1 $MPIPE train models/mlp.mp $S --plan "$TMP/cut_a.json" : \
    -np 1 $MPIPE train models/mlp.mp $S --plan "$TMP/broken.json"
claim "a flag only rank 1 does not know (an older mpipe on one host): rank 1 names it, exit 2" \
    refused "rank 1: unknown flag '--bogus'" timeout 120 \
    mpirun --oversubscribe -np 1 $MPIPE train models/mlp.mp $S : \
    -np 1 $MPIPE train models/mlp.mp $S --bogus
claim "a memory cap under a MiB is named as given, not as 0 MiB" \
    refused "over --memory-per-rank 1.0 KiB" $MPIPE train models/mlp.mp $S --memory-per-rank 1K
# A usage or input error every rank finds once MPI has started is said by rank 0 before any rank
# exits: mpirun, seeing a quiet rank's exit 2 first, could end rank 0 before its line was out (now
# and then on 2 loaded cores: one run in a few dozen), so each is run three times.
said_by_rank0() { # said_by_rank0 PATTERN train-args...: exit 2 and rank 0's line, 3 runs of 3
    local pat=$1
    shift
    thrice refused "rank 0: .*$pat" $RUN $MPIPE train "$@"
}
claim "--stages that does not match -np is refused, in rank 0's words" \
    said_by_rank0 "2 ranks for 3 stages" models/mlp.mp $S --stages 3
claim "more stages than layers under mpirun: exit 2, in rank 0's words" \
    said_by_rank0 "more than the 5 layers" models/tiny_mlp.mp $S --stages 9
$MPIPE plan models/tiny_mlp.mp --stages 2 --out "$TMP/tiny_plan.json" >/dev/null 2>&1
claim "a plan made for another model: exit 2, in rank 0's words" \
    said_by_rank0 "plan was made for another model" models/mlp.mp $S --plan "$TMP/tiny_plan.json"
claim "a memory cap no rank fits: exit 2, in rank 0's words" \
    said_by_rank0 "would need .* over --memory-per-rank" models/mlp.mp $S --memory-per-rank 1K
claim "an unknown --data source: exit 2, in rank 0's words" \
    said_by_rank0 "--data bogus: expected" models/mlp.mp $S --data bogus
claim "a batch larger than the training set: exit 2, in rank 0's words" \
    said_by_rank0 "larger than the 256 training samples" models/mlp.mp $S --batch 512
$RUN $MPIPE train models/mlp.mp $S --micro-batches 4 --checkpoint "$TMP/ck" --checkpoint-every 2 \
    >/dev/null 2>&1
claim "resuming a checkpoint of another batch: exit 2, in rank 0's words" \
    said_by_rank0 "was written with --batch 32" models/mlp.mp $S --batch 64 --micro-batches 4 \
    --checkpoint "$TMP/ck" --resume
# Start-up is not training time (DESIGN.md §4): rank 1 ends its start-up 3 s late (tests only);
# rank 0's first step (its --metrics line) and the RESULT line's throughput do not wait for it.
$RUN -x MPIPE_FAULT_INJECT=slow_start:3:1 $MPIPE train models/tiny_mlp.mp $S --stages 2 \
    --metrics "$TMP/slow.jsonl" >"$TMP/slow.out" 2>&1
first_step_quick() {
    python3 - "$TMP/slow.jsonl" "$TMP/slow.out" <<'PY'
import json, re, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step_s"' in l]
rate = float(re.search(r"^RESULT samples_per_s=([0-9.]+)", open(sys.argv[2]).read(), re.M)[1])
print(f"  first step {steps[0]['step_s']:.3f} s, {rate:.0f} samples/s")
assert len(steps) == 3 and steps[0]["step_s"] < 1.5 and rate > 3 * 32 / 1.5
PY
}
claim "a rank's slow start-up is not counted in the first step or the throughput" first_step_quick
claim "a usage error is reported once, not per rank" bash -c \
    "$RUN $MPIPE train models/mlp.mp --bogus 2>&1 | grep -c 'unknown flag' | grep -qx 1"
finish
