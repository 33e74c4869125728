#!/usr/bin/env bash
# `mpipe train` on one rank, as users and scripts meet it: the RESULT line, weight files, flags and
# exit codes of DESIGN.md §4. Usage: test_cli_train.sh path/to/mpipe (run from the repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
S="--data synthetic:256 --batch 32 --seed 1"

out=$($MPIPE train models/mlp.mp $S --max-steps 3 2>"$TMP/err")
has_all_keys() {
    for k in samples_per_s test_acc loss steps stages dp bubble peak_act_bytes; do
        [ -n "$(echo "$out" | result_field $k)" ] || return 1
    done
}
claim "RESULT line carries every key" has_all_keys
claim "RESULT counts the steps run" test "$(echo "$out" | result_field steps)" = 3
claim "RESULT starts its own line" bash -c "echo '$out' | grep -q '^RESULT '"

$MPIPE train models/mlp.mp $S --max-steps 3 --save-weights "$TMP/a.st" >/dev/null 2>&1
$MPIPE train models/mlp.mp $S --max-steps 3 --save-weights "$TMP/b.st" >/dev/null 2>&1
claim "--save-weights is byte-identical across identical runs" cmp -s "$TMP/a.st" "$TMP/b.st"
$MPIPE train models/mlp.mp $S --max-steps 3 --seed 2 --save-weights "$TMP/c.st" >/dev/null 2>&1
claim "another seed gives other weights" bash -c "! cmp -s '$TMP/a.st' '$TMP/c.st'"
names_sorted() {
    python3 - "$TMP/a.st" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
keys = [k for k in h if k != "__metadata__"]
assert keys == sorted(keys)
assert h["L2.weight"]["shape"] == [1024, 784] and h["L10.bias"]["shape"] == [10]
assert len(raw) == 8 + n + sum(4 * eval("*".join(map(str, v["shape"])) or "1") for v in h.values())
PY
}
claim "weights use PyTorch names and shapes, sorted" names_sorted

$MPIPE train models/mlp.mp $S --max-steps 0 --save-weights "$TMP/i.st" >/dev/null 2>&1
$MPIPE train models/mlp.mp $S --init "$TMP/i.st" --max-steps 0 --save-weights "$TMP/j.st" >/dev/null 2>&1
claim "--max-steps 0 writes the initial weights and --init reads them back" cmp -s "$TMP/i.st" "$TMP/j.st"
$MPIPE train models/mlp.mp $S --init "$TMP/i.st" --max-steps 3 --save-weights "$TMP/k.st" >/dev/null 2>&1
claim "--init from the seed's own initial weights trains to the same bits" cmp -s "$TMP/a.st" "$TMP/k.st"

claim "unknown flag exits 2" exits_with 2 "unknown flag" $MPIPE train models/mlp.mp --no-such-flag
claim "missing model file exits 3 naming it" exits_with 3 "nope.mp" $MPIPE train nope.mp $S
printf 'input 1 28 28\nflatten\ndens 10\nsoftmax_xent\n' > "$TMP/bad.mp"
claim "spec error is FILE:LINE with exit 2" exits_with 2 "bad.mp:3" $MPIPE train "$TMP/bad.mp" $S
claim "batch not divisible by M exits 2" exits_with 2 "divisible" $MPIPE train models/mlp.mp $S --micro-batches 5
claim "2 stages on one rank exits 2 saying -np 2" \
    exits_with 2 "1 rank for 2 stages: run with mpirun -np 2\$" $MPIPE train models/mlp.mp $S --stages 2
claim "2 stages x 2 replicas on one rank exits 2 naming both ways" \
    exits_with 2 "1 rank for 2 stages x 2 replicas: run with mpirun -np 4 (or -np 2 to emulate" \
    $MPIPE train models/mlp.mp $S --stages 2 --dp 2 --micro-batches 4
claim "bad number exits 2 naming the flag" exits_with 2 "\-\-lr" $MPIPE train models/mlp.mp $S --lr abc
claim "unknown optimizer exits 2 listing choices" exits_with 2 "lamb" $MPIPE train models/mlp.mp $S --optimizer foo
claim "bad data source exits 2" exits_with 2 "synthetic" $MPIPE train models/mlp.mp --data bogus
claim "missing data directory exits 3" exits_with 3 "nowhere" $MPIPE train models/mlp.mp --data mnist-dir:/nowhere
claim "--data text: without a file exits 2 saying so" exits_with 2 "text: needs a file" \
    $MPIPE train models/gpt.mp --data text: --max-steps 1
claim "--init with a missing file exits 3" exits_with 3 "missing.st" $MPIPE train models/mlp.mp $S --init "$TMP/missing.st"
# Output files rank 0 writes at the end are checked before training: a typo in --save-weights
# used to cost the whole run (trained, then exit 3 and no weights).
untrained() { # untrained PATTERN cmd...: exit 3 with PATTERN, and no step ran (no epoch line)
    exits_with 3 "$@" && ! grep -q "^epoch\|RESULT" "$TMP/stderr"
}
claim "--save-weights into a missing directory exits 3 before training, naming flag and path" \
    untrained "save-weights $TMP/nodir/w.st: cannot write" $MPIPE train models/mlp.mp $S \
    --max-steps 3 --save-weights "$TMP/nodir/w.st"
claim "--metrics naming a directory exits 3 before training" \
    untrained "metrics $TMP: is a directory" $MPIPE train models/mlp.mp $S --max-steps 3 \
    --metrics "$TMP"
claim "... and on 2 ranks, --trace into a missing directory: rank 0 says it" \
    untrained "rank 0: --trace $TMP/nodir/t.json: cannot write" mpirun -np 2 --oversubscribe \
    $MPIPE train models/mlp.mp $S --max-steps 3 --stages 2 --trace "$TMP/nodir/t.json"
claim "... once" test "$(grep -c "cannot write" "$TMP/stderr")" = 1
touch "$TMP/afile"
claim "--checkpoint under a file exits 3 before training, said once" \
    untrained "checkpoint directory $TMP/afile/ck: cannot create" mpirun -np 2 --oversubscribe \
    $MPIPE train models/mlp.mp $S --max-steps 3 --stages 2 --checkpoint "$TMP/afile/ck"
claim "... once" test "$(grep -c "cannot create" "$TMP/stderr")" = 1
claim "no temporary file is left beside a checked output" \
    bash -c "! ls '$TMP'/*.tmp.* 2>/dev/null | grep -q ."
claim "--init with other shapes exits 2" exits_with 2 "shape" $MPIPE train models/tiny_mlp.mp $S --init "$TMP/i.st" --max-steps 1
claim "--zero 1 with one replica says it has nothing to shard" \
    bash -c "$MPIPE train models/tiny_mlp.mp $S --zero 1 --max-steps 1 2>&1 |
             grep -q 'note: --zero 1 shards .*this run has one replica'"
claim "flags: an integer past every range is out of range, a hexadecimal float is not a number" \
    bash -c "$MPIPE train models/tiny_mlp.mp --max-steps 99999999999999999999 2>&1 |
             grep -q 'max-steps: 99999999999999999999 is out of range' &&
             $MPIPE train models/tiny_mlp.mp --lr 0x10 2>&1 | grep -q \"lr: '0x10' is not a number\""
# A tensor the model has no layer for is another model's (a spec changed since: it was dropped
# without a word, and trained parameters with it); a checkpoint's stage file is a model's weights
# with their optimizer state beside them: loaded with a note when it holds every layer.
python3 - "$TMP/i.st" "$TMP/extra.st" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); end = len(raw) - 8 - n
h["L99.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]}
hb = json.dumps(h).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:] + bytes(4))
PY
claim "--init with a tensor of no layer of the model exits 2 naming it" \
    refused "extra.st: tensor 'L99.weight' belongs to no layer of models/mlp.mp" \
    $MPIPE train models/mlp.mp $S --init "$TMP/extra.st" --max-steps 1
$MPIPE train models/mlp.mp $S --max-steps 3 --checkpoint "$TMP/ick" >/dev/null 2>&1
$MPIPE train models/mlp.mp $S --init "$TMP/ick/step-3/stage-0.safetensors" --max-steps 0 \
    --save-weights "$TMP/ick.st" >/dev/null 2>"$TMP/ick.err"
claim "--init from a 1-stage checkpoint's file takes its weights (the run's own)" \
    cmp -s "$TMP/a.st" "$TMP/ick.st"
claim "... saying that it leaves the optimizer state" \
    grep -q "ick/step-3/stage-0.safetensors is a checkpoint's stage file: --init takes its weights" \
    "$TMP/ick.err"
head -c 100 "$TMP/i.st" > "$TMP/trunc.st"
claim "--init with a truncated file exits 2 with a byte offset" exits_with 2 "byte" $MPIPE train models/mlp.mp $S --init "$TMP/trunc.st"
claim "a diverging run stops with exit 5 naming the step" exits_with 5 "step" $MPIPE train models/mlp.mp $S --optimizer sgd --lr 1000 --lr-schedule constant --max-steps 50
claim "more stages than layers exits 2" exits_with 2 "layers" $MPIPE train models/tiny_mlp.mp $S --stages 1 --schedule interleaved --chunks 9

$MPIPE train models/mlp.mp $S --max-steps 4 --metrics "$TMP/m.jsonl" --trace "$TMP/t.json" >/dev/null 2>&1
claim "--metrics writes one JSON object per step" bash -c "[ \$(wc -l < '$TMP/m.jsonl') -eq 4 ] && python3 -c \"import json,sys; [json.loads(l) for l in open('$TMP/m.jsonl')]\""
claim "--trace writes a Chrome trace" python3 -c "import json; t = json.load(open('$TMP/t.json')); assert any(e.get('ph') == 'X' for e in t['traceEvents'])"
claim "train --help documents the RESULT line" bash -c "$MPIPE train --help | grep -q RESULT"
claim "mpipe --help lists the commands" bash -c "$MPIPE --help | grep -q plan"
finish
