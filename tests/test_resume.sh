#!/usr/bin/env bash
# Checkpoints and --resume under mpirun (engine/ckpt/mp_ckpt.h, DESIGN.md §5): the on-disk layout and
# digests, byte-identical final weights after stopping and resuming, resharding 2->1, 2->3 and
# 4->2 (and across schedules), fallback past a damaged checkpoint, --keep, and the refusals
# (no checkpoint: exit 3; other --micro-batches: exit 2). Usage: test_resume.sh path/to/mpipe.
MPIPE=$1
. "$(dirname "$0")/lib.sh"
MODEL=models/tiny.mp # 12 layers with dropout and layernorm: enough for 4 stages and RNG state
S="--data synthetic:512 --batch 32 --micro-batches 4 --seed 3 --epochs 3 --lr-schedule plateau"
S="$S --deadline 20"
run() { # run NP args...: mpipe train under mpirun, output in $TMP/out and $TMP/err
    local np=$1
    shift
    mpirun -np "$np" --oversubscribe "$MPIPE" train $MODEL $S "$@" >"$TMP/out" 2>"$TMP/err"
}
same() { cmp -s "$TMP/full.st" "$1" || { echo "  $1 differs from the uninterrupted run"; return 1; }; }
verify_digests() { # every stage file of a step directory matches its manifest
    python3 - "$1" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]; m = json.load(open(os.path.join(d, "manifest.json")))
assert len(m["files"]) == m["layout"]["S"]
for f in m["files"]:
    data = open(os.path.join(d, f["name"]), "rb").read()
    assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"], f["name"]
PY
}

run 1 --save-weights "$TMP/full.st"
claim "the uninterrupted single-rank run finishes (48 steps)" grep -q "steps=48" "$TMP/out"

# Stop mid-epoch (20 of 16+16+16 steps) on 2 ranks, then inspect what was written.
run 2 --max-steps 20 --checkpoint "$TMP/c2"
claim "a run stopped by --max-steps leaves latest -> step-20" \
    test "$(readlink "$TMP/c2/latest")" = step-20
claim "step-20 holds one file per stage and a manifest" \
    test -f "$TMP/c2/step-20/stage-0.safetensors" -a -f "$TMP/c2/step-20/stage-1.safetensors" \
    -a -f "$TMP/c2/step-20/manifest.json"
claim "the manifest's SHA-256 digests match the files" verify_digests "$TMP/c2/step-20"
manifest_ok() {
    python3 - "$TMP/c2/step-20" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
assert (m["step"], m["epoch"], m["cursor"]) == (20, 1, 4), (m["step"], m["epoch"], m["cursor"])
assert m["layout"]["M"] == 4 and m["layout"]["batch"] == 32 and m["layout"]["P"] == 2
assert m["optimizer"]["kind"] == "adam" and m["optimizer"]["step"] == 20
assert m["lr"]["kind"] == "plateau" and "state" in m["lr"] and m["rng"]["seed"] == 3
hdr = open(sys.argv[1] + "/stage-1.safetensors", "rb").read()
assert b'"L11.weight.m"' in hdr and b'"L11.weight.v"' in hdr, "optimizer state by layer name"
PY
}
claim "the manifest records position, layout, optimizer and LR state" manifest_ok

cp -r "$TMP/c2" "$TMP/c2b"
cp -r "$TMP/c2" "$TMP/c2c"
run 2 --checkpoint "$TMP/c2" --resume --save-weights "$TMP/r22.st"
claim "2 -> 2: resuming gives the uninterrupted run's bytes" same "$TMP/r22.st"
claim "resume says where it resumed from" grep -q "resumed from .*step-20" "$TMP/err"
claim "--max-steps counts from the start of training" grep -q "steps=48" "$TMP/out"
# The epoch line's samples/s counts the steps this run took, as RESULT does (counted from step 0,
# a run resumed at step 5 of 10 said 85 samples/s where RESULT said 42.6).
epoch_sps() { tr '\r' '\n' <"$TMP/err" | sed -n 's/^epoch .* samples\/s \([0-9]*\)$/\1/p' | tail -1; }
sps_match() {
    local e r
    e=$(epoch_sps) r=$(result_field samples_per_s <"$TMP/out")
    python3 -c "import sys; e, r = float(sys.argv[1]), float(sys.argv[2]); assert abs(e - r) <= 1, (e, r)" \
        "${e:-0}" "${r:-1e9}" 2>/dev/null || { echo "  epoch line ${e:-none}, RESULT ${r:-none}"; return 1; }
}
claim "a resumed run's last epoch line gives RESULT's samples/s" sps_match
run 2 --checkpoint "$TMP/c2" --resume
finished_rc=$?
claim "resuming a finished run trains nothing, exit 0 ($finished_rc), and says so" \
    test "$finished_rc" = 0 -a "$(result_field steps <"$TMP/out")" = 48
claim "... in a note naming the step and the end" grep -q "nothing to train: the checkpoint's step 48 is at or past this run's end (--epochs 3)" \
    "$TMP/err"
run 1 --checkpoint "$TMP/c2b" --resume --save-weights "$TMP/r21.st"
claim "2 -> 1 (resharded): the uninterrupted run's bytes" same "$TMP/r21.st"
run 3 --checkpoint "$TMP/c2c" --resume --save-weights "$TMP/r23.st"
claim "2 -> 3 (resharded): the uninterrupted run's bytes" same "$TMP/r23.st"

# Without --micro-batches a resume takes the checkpointed run's M (DIR/layout.json): 2 ranks
# default to M 4 here, one rank to M 1, and the numbers continue only with the run's own.
S0=${S/--micro-batches 4 /}
mpirun -np 2 --oversubscribe "$MPIPE" train $MODEL $S0 --max-steps 20 --checkpoint "$TMP/cd" \
    >"$TMP/out" 2>"$TMP/err"
mpirun -np 1 "$MPIPE" train $MODEL $S0 --checkpoint "$TMP/cd" --resume \
    --save-weights "$TMP/rd.st" >"$TMP/out" 2>"$TMP/err"
claim "2 -> 1 without --micro-batches: the checkpointed run's M, the uninterrupted run's bytes" \
    same "$TMP/rd.st"
claim "... and it says so, naming the file" \
    grep -q "resuming with the checkpointed run's --micro-batches 4 (.*cd/layout.json)" "$TMP/err"
# ... and its optimizer, when --optimizer is not given either.
run 1 --optimizer momentum --save-weights "$TMP/fullm.st"
mpirun -np 2 --oversubscribe "$MPIPE" train $MODEL $S0 --optimizer momentum --max-steps 20 \
    --checkpoint "$TMP/cm" >"$TMP/out" 2>"$TMP/err"
mpirun -np 1 "$MPIPE" train $MODEL $S0 --checkpoint "$TMP/cm" --resume \
    --save-weights "$TMP/rm1.st" >"$TMP/out" 2>"$TMP/err"
claim "2 -> 1 without --micro-batches or --optimizer: the checkpointed run's, its bytes" \
    bash -c "cmp -s '$TMP/fullm.st' '$TMP/rm1.st' &&
             grep -q -- '--micro-batches 4 --optimizer momentum (' '$TMP/err'"
# A malformed layout.json is only a lost default: a warning naming it, and the checkpoint's own
# manifest is checked against the run (it was exit 2, which blocked sound checkpoints).
echo '{"format": "mpipe-layout", "M": 3, "batch": 32}' >"$TMP/cd/layout.json"
cp -r "$TMP/cd" "$TMP/cd2"
mpirun -np 1 "$MPIPE" train $MODEL $S0 --checkpoint "$TMP/cd" --resume >"$TMP/out" 2>"$TMP/err"
rc=$?
claim "a layout.json whose batch is no multiple of M: a warning naming it" \
    grep -q 'warning: .*cd/layout.json: expected.*ignored' "$TMP/err"
claim "... then, without --micro-batches, the manifest refuses M 1, naming the 4 to pass (exit $rc)" \
    bash -c "[ $rc -eq 2 ] && grep -q -- '--micro-batches 4 and this run has' '$TMP/err'"
mpirun -np 1 "$MPIPE" train $MODEL $S0 --micro-batches 4 --checkpoint "$TMP/cd2" --resume \
    --save-weights "$TMP/rd2.st" >"$TMP/out" 2>"$TMP/err"
claim "... and with it, resumes to the uninterrupted run's bytes" same "$TMP/rd2.st"

run 4 --max-steps 20 --checkpoint "$TMP/c4"
run 2 --checkpoint "$TMP/c4" --resume --schedule gpipe --save-weights "$TMP/r42.st"
claim "4 -> 2 with another schedule (resharded): the uninterrupted run's bytes" same "$TMP/r42.st"
run 2 --max-steps 20 --schedule interleaved --checkpoint "$TMP/ci"
claim "interleaved writes one file per virtual stage" test -f "$TMP/ci/step-20/stage-3.safetensors"
run 1 --checkpoint "$TMP/ci" --resume --save-weights "$TMP/ri1.st"
claim "interleaved 2x2 -> 1: the uninterrupted run's bytes" same "$TMP/ri1.st"

# Periodic checkpoints, --keep, and falling back past a damaged newest checkpoint.
run 2 --max-steps 40 --checkpoint "$TMP/ck" --checkpoint-every 6 --keep 3
claim "--keep 3 keeps the newest three" \
    test "$(cd "$TMP/ck" && echo step-*)" = "step-32 step-36 step-40"
printf 'X' | dd of="$TMP/ck/step-40/stage-1.safetensors" bs=1 seek=200 conv=notrunc 2>/dev/null
run 2 --checkpoint "$TMP/ck" --resume --checkpoint-every 4 --keep 4 --save-weights "$TMP/rf.st"
claim "a damaged checkpoint is reported and skipped" \
    grep -q "step-40 is unusable.*SHA-256.*falling back to .*step-36" "$TMP/err"
claim "the fallback run still gives the uninterrupted run's bytes" same "$TMP/rf.st"
claim "reaching the damaged step again replaced it with a good one" verify_digests "$TMP/ck/step-40"
claim "pruning keeps this run's newest four" \
    test "$(cd "$TMP/ck" && echo step-*)" = "step-36 step-40 step-44 step-48"
rm -rf "$TMP/ck/step-48" "$TMP/ck/step-44"
ln -sfn step-40 "$TMP/ck/latest"
echo '{"format": "mpipe-ch' >"$TMP/ck/step-40/manifest.json"
run 2 --checkpoint "$TMP/ck" --resume --save-weights "$TMP/rm.st"
claim "a truncated manifest falls back too, same bytes" same "$TMP/rm.st"
# A flipped bit that leaves the manifest valid JSON (here the plateau schedule's threshold, read
# on resume): only the manifest's own digest (manifest.sha256) can tell. A chaos campaign's flip of
# this kind resumed from the damaged step unnoticed (1 fault in 200, 2026-12-05).
run 2 --max-steps 20 --checkpoint "$TMP/cv" --checkpoint-every 10
claim "the manifest's own digest is written beside it, in sha256sum's format" \
    bash -c "cd '$TMP/cv/step-20' && sha256sum --quiet -c manifest.sha256"
python3 - "$TMP/cv/step-20/manifest.json" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.index(b'"threshold": 0.0001') + len(b'"threshold": 0.000')
b[i] ^= 0x02  # '1' -> '3': still a number, still JSON
open(sys.argv[1], "wb").write(b)
PY
run 2 --checkpoint "$TMP/cv" --resume --save-weights "$TMP/rv.st"
claim "a bit flipped inside a manifest value is caught by its digest and skipped" \
    grep -q "step-20 is unusable.*manifest is damaged.*falling back to .*step-" "$TMP/err"
claim "... and the fallback run gives the uninterrupted run's bytes" same "$TMP/rv.st"

# --dp 2 is part of the numbers (DESIGN.md §6): its reference is one rank emulating the replicas.
# --zero 1: replica 0 writes the whole optimizer state, as an unsharded run would (the same stage
# file's bytes), and the checkpoint resumes on one rank and on sharded replicas alike; a resume
# without --dp takes the checkpointed run's (it continued as --dp 1 before, other numbers and no
# word of it).
run 1 --stages 1 --dp 2 --save-weights "$TMP/fulldp.st"
samedp() { cmp -s "$TMP/fulldp.st" "$1" || { echo "  $1 differs from the --dp 2 run"; return 1; }; }
run 2 --stages 1 --dp 2 --zero 1 --max-steps 20 --checkpoint "$TMP/cz1"
run 2 --stages 1 --dp 2 --zero 0 --max-steps 20 --checkpoint "$TMP/cz0"
claim "--zero 1 writes the stage file --zero 0 writes, byte for byte" \
    cmp "$TMP/cz1/step-20/stage-0.safetensors" "$TMP/cz0/step-20/stage-0.safetensors"
cp -r "$TMP/cz1" "$TMP/cz1b"
run 1 --checkpoint "$TMP/cz1" --resume --save-weights "$TMP/rz1.st"
claim "--zero 1's checkpoint resumed on 1 rank without --dp: the --dp 2 run's bytes" \
    samedp "$TMP/rz1.st"
claim "... taking the checkpointed run's --dp 2, and saying so" \
    grep -q "resuming with the checkpointed run's.*--dp 2" "$TMP/err"
run 2 --stages 1 --dp 2 --zero 1 --checkpoint "$TMP/cz1b" --resume --save-weights "$TMP/rz2.st"
claim "... and on 2 sharded replicas: the same bytes" samedp "$TMP/rz2.st"
exit_is() { # exit_is CODE PATTERN NP args...
    local code=$1 pat=$2
    shift 2
    run "$@"
    local rc=$?
    [ $rc -eq "$code" ] && grep -q -- "$pat" "$TMP/err" ||
        { echo "  got exit $rc: $(grep mpipe "$TMP/err" | head -3)"; return 1; }
}
for f in "$TMP"/ck/step-*/stage-0.safetensors; do printf 'X' | dd of="$f" bs=1 seek=100 conv=notrunc 2>/dev/null; done
claim "no valid checkpoint left: exit 3" exit_is 3 "no valid checkpoint" 2 --checkpoint "$TMP/ck" --resume
claim "nothing to resume: exit 3" exit_is 3 "no valid checkpoint" 2 --checkpoint "$TMP/empty" --resume
claim "another --micro-batches: exit 2 naming it" \
    exit_is 2 "micro-batches 4" 2 --checkpoint "$TMP/c4" --resume --micro-batches 8
claim "--resume without --checkpoint: exit 2" exit_is 2 "need --checkpoint" 1 --resume
# A run that does not resume, pointed at a directory of checkpoints, would prune them as another
# timeline's (a forgotten --resume deleted an earlier run's newer steps): refused before training.
before=$(ls "$TMP/c4")
claim "a fresh run into a directory holding checkpoints: exit 2 naming the newest" \
    exit_is 2 "holds an earlier run's checkpoints (newest step-48): --resume continues" 2 \
    --max-steps 3 --checkpoint "$TMP/c4"
claim "... and they are all still there ($(echo $before))" test "$(ls "$TMP/c4")" = "$before"
finish
