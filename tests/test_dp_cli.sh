#!/usr/bin/env bash
# Data parallelism from the command line (DESIGN.md §6): the same bits on any number of processes
# in `ordered` mode, `fast` mode deterministic for a fixed layout, weighted aggregation (incl.
# perf), speed-sized shards, and real replicas converging like one rank. Usage: test_dp_cli.sh path/to/mpipe (from the repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
S="--data synthetic:512 --batch 32 --seed 5 --max-steps 4 --micro-batches 4"
RUN="mpirun -np 2 --oversubscribe"

$MPIPE train models/mlp.mp $S --dp 2 --save-weights "$TMP/emu.st" >/dev/null 2>&1
$RUN $MPIPE train models/mlp.mp $S --dp 2 --save-weights "$TMP/real.st" >"$TMP/real.out" 2>&1
claim "--dp 2 on 2 ranks = --dp 2 emulated on 1 rank (bytes)" cmp -s "$TMP/emu.st" "$TMP/real.st"
$RUN -x MPIPE_DP_SHARED=0 $MPIPE train models/mlp.mp $S --dp 2 --save-weights "$TMP/msg.st" \
    >/dev/null 2>&1
claim "--dp 2 with its chunks as MPI messages (replicas on several hosts) = emulated (bytes)" \
    cmp -s "$TMP/emu.st" "$TMP/msg.st"
claim "RESULT reports dp=2" test "$(result_field dp < "$TMP/real.out")" = 2
claim "RESULT reports 1 stage" test "$(result_field stages < "$TMP/real.out")" = 1
$RUN $MPIPE train models/mlp.mp $S --dp 2 --dp-reduce fast --save-weights "$TMP/f1.st" >/dev/null 2>&1
$RUN $MPIPE train models/mlp.mp $S --dp 2 --dp-reduce fast --save-weights "$TMP/f2.st" >/dev/null 2>&1
claim "--dp-reduce fast is deterministic for a fixed layout" cmp -s "$TMP/f1.st" "$TMP/f2.st"
$MPIPE train models/mlp.mp $S --dp 2 --aggregate size --save-weights "$TMP/size.st" >/dev/null 2>&1
claim "--aggregate size with equal shards = mean (bytes)" cmp -s "$TMP/emu.st" "$TMP/size.st"
printf '1\n1\n' > "$TMP/w11"
$MPIPE train models/mlp.mp $S --dp 2 --aggregate custom --aggregate-weights "$TMP/w11" \
    --save-weights "$TMP/c11.st" >/dev/null 2>&1
claim "--aggregate custom with equal weights = mean (bytes)" cmp -s "$TMP/emu.st" "$TMP/c11.st"
printf '1\n0\n' > "$TMP/w10"
$RUN $MPIPE train models/mlp.mp $S --dp 2 --aggregate custom --aggregate-weights "$TMP/w10" \
    --save-weights "$TMP/c10.st" >/dev/null 2>&1
claim "a replica with weight 0 changes the result (only replica 0's data counts)" \
    bash -c "! cmp -s '$TMP/emu.st' '$TMP/c10.st'"

# Loss curves: real replicas against one rank without data parallelism (same global batch and M).
L="--data synthetic:2048 --batch 64 --seed 9 --max-steps 30 --micro-batches 4 --lr-schedule constant"
$RUN $MPIPE train models/tiny_mlp.mp $L --dp 2 --metrics "$TMP/dp.jsonl" >/dev/null 2>&1
$MPIPE train models/tiny_mlp.mp $L --metrics "$TMP/one.jsonl" >/dev/null 2>&1
claim "2 real replicas follow the one-rank loss curve (30 steps, within 1e-3 relative)" python3 -c "
import json
a = [json.loads(l)['loss'] for l in open('$TMP/dp.jsonl')]
b = [json.loads(l)['loss'] for l in open('$TMP/one.jsonl')]
assert len(a) == len(b) == 30 and b[-1] < b[0] * 0.9, (len(a), len(b))
assert max(abs(x - y) / y for x, y in zip(a, b)) < 1e-3"

# perf weights: from the replicas' losses, which every layout computes alike, so deterministic.
$MPIPE train models/mlp.mp $S --dp 2 --aggregate perf --metrics "$TMP/perf_emu.jsonl" \
    --save-weights "$TMP/perf_emu.st" >/dev/null 2>&1
$RUN $MPIPE train models/mlp.mp $S --dp 2 --aggregate perf --metrics "$TMP/perf.jsonl" \
    --save-weights "$TMP/perf.st" >/dev/null 2>&1
claim "--aggregate perf: 2 real replicas = emulated (bytes)" cmp -s "$TMP/perf_emu.st" "$TMP/perf.st"
claim "--aggregate perf logs bounded weights every step, equal at step 1" python3 -c "
import json
w = [json.loads(l)['weights'] for l in open('$TMP/perf.jsonl')]
assert len(w) == 4 and w[0] == [1, 1], w
assert all(len(x) == 2 and all(0.5 <= v <= 2 for v in x) and abs(sum(x) - 2) < 1e-9 for x in w)"
claim "--aggregate perf moves the weights away from the mean's (bytes differ)" \
    bash -c "! cmp -s '$TMP/emu.st' '$TMP/perf.st'"
P8="--data synthetic:512 --batch 32 --seed 5 --micro-batches 4 --dp 2 --aggregate perf"
P8="$P8 --lr-schedule constant --warmup 0"
$MPIPE train models/mlp.mp $P8 --max-steps 8 --save-weights "$TMP/perf8.st" >/dev/null 2>&1
$MPIPE train models/mlp.mp $P8 --max-steps 4 --checkpoint "$TMP/ck" >/dev/null 2>&1
$MPIPE train models/mlp.mp $P8 --max-steps 8 --checkpoint "$TMP/ck" --resume \
    --save-weights "$TMP/perf8r.st" >/dev/null 2>&1
claim "--aggregate perf resumed at step 4 = uninterrupted (scores in the checkpoint; bytes)" \
    cmp -s "$TMP/perf8.st" "$TMP/perf8r.st"

# Speed-sized shards: equal until the first re-balance (step 10), so `size` keeps the mean's bits.
$RUN $MPIPE train models/mlp.mp $S --dp 2 --shard-by speed --aggregate size \
    --save-weights "$TMP/speed4.st" >/dev/null 2>&1
claim "--shard-by speed before its first re-balance = equal shards (bytes)" \
    cmp -s "$TMP/emu.st" "$TMP/speed4.st"
V="--data synthetic:2048 --batch 64 --seed 9 --max-steps 25 --micro-batches 8 --lr-schedule constant"
$RUN $MPIPE train models/tiny_mlp.mp $V --dp 2 --shard-by speed --aggregate size \
    --metrics "$TMP/speed.jsonl" >/dev/null 2>&1
claim "--shard-by speed on 2 ranks: shards of >= 1 micro-batch summing to M, loss falls" python3 -c "
import json
rows = [json.loads(l) for l in open('$TMP/speed.jsonl')]
assert len(rows) == 25, len(rows)
assert all(sum(r['shards']) == 8 and min(r['shards']) >= 1 for r in rows)
assert rows[-1]['loss'] < rows[0]['loss'] * 0.9, (rows[0]['loss'], rows[-1]['loss'])"

# A replica whose core is busier is named at the end (the step waits for it): two busy loops
# pinned to core 1, beside rank 1 bound there, leave it a third of the core.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    hogs=()
    for _ in 1 2; do
        taskset -c 1 sh -c 'while :; do :; done' &
        hogs+=($!)
    done
    mpirun -np 2 --oversubscribe --bind-to core $MPIPE train models/tiny_mlp.mp \
        --data synthetic:2048 --batch 64 --max-steps 40 --dp 2 >/dev/null 2>"$TMP/pace.err"
    kill "${hogs[@]}" 2>/dev/null
    wait "${hogs[@]}" 2>/dev/null
    claim "a replica on a busier core is named: rank 1 computed longer per sample than rank 0" \
        grep -q '^replicas: rank 1 computed [0-9]*% longer per sample than rank 0 on the same layers' \
        "$TMP/pace.err"
fi
claim "M not divisible by D exits 2" refused "divisible" $MPIPE train models/mlp.mp $S --dp 3
claim "custom without weights exits 2" refused "aggregate-weights" $MPIPE train models/mlp.mp $S --dp 2 --aggregate custom
printf '1\nx\n' > "$TMP/wbad"
claim "a bad weights file names its line" refused "wbad:2" $MPIPE train models/mlp.mp $S --dp 2 --aggregate custom --aggregate-weights "$TMP/wbad"
claim "-np neither P nor P*D exits 2" refused "ranks" mpirun -np 3 --oversubscribe $MPIPE train models/mlp.mp $S --stages 2 --dp 2
finish
