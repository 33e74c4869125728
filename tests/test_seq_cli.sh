#!/usr/bin/env bash
# Token models from the command line (DESIGN.md §9), as users meet them: spec errors of issue 15
# as FILE:LINE with exit 2, bad text files as exit 2 naming the file, the executor's residual add
# and skip gradient against a step computed by hand (python3), on one rank and on two, weights
# saved under §9's names (E once), a hand-made plan on unit boundaries (and one inside a block
# refused), and a plan written before blocks existed still accepted. Usage: test_seq_cli.sh mpipe.
MPIPE=$1
. "$(dirname "$0")/lib.sh"
RUN="mpirun -np 2 --oversubscribe"

# ---- spec errors: exit 2, FILE:LINE on the right line ----
spec_refused() { # spec_refused LINE PATTERN 'spec text' (plan parses as train does, without MPI)
    printf "$3" >"$TMP/bad.mp"
    refused "bad.mp:$1: .*$2" $MPIPE plan "$TMP/bad.mp" --stages 1
}
H='input tokens 8\nembed 256 16\n'
T='lm_head\nsoftmax_xent\n'
printf "${H}attenton 4\n$T" >"$TMP/typo.mp"
claim "train: unknown word" refused "typo.mp:3: unknown layer 'attenton'" \
    $MPIPE train "$TMP/typo.mp" --data "text:$TMP/none"
claim "unknown word" spec_refused 3 "unknown layer 'attenton'" "${H}attenton 4\n$T"
claim "end with no open block" spec_refused 4 "end with no open block" "${H}layernorm\nend\n$T"
claim "block never closed, on its opening line" spec_refused 3 "never closed" \
    "${H}residual\nlayernorm\n$T"
claim "repeat 0" spec_refused 3 "at least 1" "${H}repeat 0\nlayernorm\nend\n$T"
claim "a residual that changes the shape, on its end" spec_refused 6 "keep its input's shape" \
    "${H}residual\nlayernorm\ndense 8\nend\n$T"
claim "C not divisible by H" spec_refused 3 "not divisible by 3 heads" "${H}attention 3\n$T"
claim "a tied lm_head without an embed" spec_refused 3 "needs an .embed" \
    'input 16\ndense 8\nlm_head\nsoftmax_xent\n'
claim "a tied lm_head of another width" spec_refused 4 "differs from the embed's C" \
    "${H}dense 8\n$T"
claim "flatten on a sequence" spec_refused 3 "does not apply to a sequence" "${H}flatten\n$T"
claim "embed not right after input tokens" spec_refused 3 "right after .input tokens" \
    "${H}embed 256 16\n$T"
claim "a loss that is not last" spec_refused 3 "a loss must be the last" \
    "${H}softmax_xent\n$T"

# ---- bad text files: exit 2 naming the file (and the sizes, or the byte); unreadable: exit 3 ----
python3 -c "open('$TMP/ok.txt', 'wb').write(bytes((i * 7) % 65 + 32 for i in range(400)))"
claim "a missing text file exits 3 (unreadable, as a missing IDX file) naming it" \
    exits_with 3 "nowhere.txt: cannot read" \
    $MPIPE train models/gpt.mp --data "text:$TMP/nowhere.txt"
claim "a directory given as the text file exits 3 naming it (unreadable, as --init's and --plan's)" \
    exits_with 3 "$TMP: cannot read: Is a directory" $MPIPE train models/gpt.mp --data "text:$TMP"
: >"$TMP/empty.txt"
claim "an empty text file exits 2 naming it and its sizes" \
    refused "empty.txt: 0 bytes split into 0 training and 0 validation" \
    $MPIPE train models/gpt.mp --data "text:$TMP/empty.txt"
head -c 1000 "$TMP/ok.txt" >"$TMP/short.txt"
claim "a file too short for T + 1 = 129 in its validation split exits 2 with the sizes" \
    refused "short.txt: 400 bytes split into 360 training and 40 validation bytes.*T + 1 = 129" \
    $MPIPE train models/gpt.mp --data "text:$TMP/short.txt"
claim "a byte beyond V exits 2 with its offset" \
    refused "ok.txt: byte 0: value 32 is not an id" \
    $MPIPE train tests/data/residual_tiny.mp --data "text:$TMP/ok.txt"
printf 'input tokens 4\nembed 40 8\ndense 256\nsoftmax_xent\n' >"$TMP/small_embed.mp"
claim "a byte beyond the embed's V exits 2 even when the loss has 256 classes" \
    refused "ok.txt: byte 2: value 46 is not an id of the model's vocabulary of 40" \
    $MPIPE train "$TMP/small_embed.mp" --data "text:$TMP/ok.txt"
printf 'input tokens 4\nembed 256 8\ndense 10\nsoftmax_xent\n' >"$TMP/few_classes.mp"
claim "a byte beyond the loss's classes (under the embed's V) names the model's lines" \
    refused "value 32 is not an id.*few_classes.mp:4 (softmax_xent) predicts 10 classes, fewer than the 256 ids of the embed (.*few_classes.mp:2)" \
    $MPIPE train "$TMP/few_classes.mp" --data "text:$TMP/ok.txt"
printf 'input tokens 8\nembed 100 16\nlm_head\nsoftmax_xent\n' >"$TMP/v100.mp"
claim "a fortunes byte beyond V names its fortunes file and the offset there" \
    refused "text:fortunes: /usr/share/games/fortunes/[^:]*: byte [0-9]* ([0-9]* of the corpus): value [0-9]* is not an id" \
    $MPIPE train "$TMP/v100.mp" --max-steps 1
# More --eval-windows than the validation split holds: all are evaluated, and said (it was
# silent, and the figures read as if from the windows asked for); the default 256 says nothing.
claim "--eval-windows beyond the validation split: a note with the windows there" \
    bash -c "$MPIPE train tests/data/gpt_tiny.mp --data text:$TMP/ok.txt --batch 4 --max-steps 1 \
             --eval-windows 100 2>&1 | grep -q 'eval-windows 100: the validation split of .*ok.txt holds 5 windows of 7 bytes; all are evaluated' &&
             ! $MPIPE train tests/data/gpt_tiny.mp --data text:$TMP/ok.txt --batch 4 --max-steps 1 \
             2>&1 | grep -q 'eval-windows'"
# Text for an image model (and images for a token model): refused by the model's input line. An
# MLP took any text file as 784-byte "images", trained and exited 0.
head -c 20000 /dev/urandom >"$TMP/bytes.bin"
claim "text data for an image model exits 2 naming its input line" \
    refused "text:$TMP/bytes.bin: text is the data of token models .*mlp.mp:3 takes images" \
    $MPIPE train models/mlp.mp --data "text:$TMP/bytes.bin" --max-steps 1
claim "... and images for a token model" \
    refused "--data fashion-mnist: images, and models/gpt.mp:3 takes byte tokens" \
    $MPIPE train models/gpt.mp --data fashion-mnist --max-steps 1

# ---- the executor's residual, against one SGD step computed by hand ----
# residual_tiny: E [3, 2] -> x + tanh(dense(x)) -> (y + dense(y)) + y -> head U [3, 2] -> loss.
# Text bytes in {0, 1, 2}; --shuffle off, batch 1: step 0's window is bytes 0..2.
python3 -c "open('$TMP/abc.txt', 'wb').write(bytes([2, 0, 1] + [(i * 5) % 3 for i in range(37)]))"
R="tests/data/residual_tiny.mp --data text:$TMP/abc.txt --batch 1 --shuffle off --optimizer sgd"
R="$R --lr 0.5 --lr-schedule constant --warmup 0 --clip-norm 0 --max-steps 1"
$MPIPE train $R --max-steps 0 --save-weights "$TMP/zero.st" >/dev/null 2>&1
set_init() {
    python3 - "$TMP/zero.st" "$TMP/init.st" <<'PY'
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read()); n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
vals = {"L1.weight": [0.3, -0.2, 0.1, 0.4, -0.5, 0.25],   # E rows 0, 1, 2
        "L2.weight": [0.6, -0.3, 0.2, 0.9], "L2.bias": [0.05, -0.1],
        "L4.weight": [-0.4, 0.35, 0.15, 0.5], "L4.bias": [0.2, 0.1],
        "L5.weight": [0.7, -0.4, -0.2, 0.5, 0.3, 0.8]}
assert sorted(k for k in h if k != "__metadata__") == sorted(vals), h.keys()
for k, v in vals.items():
    a, b = h[k]["data_offsets"]
    raw[8 + n + a:8 + n + b] = struct.pack("<%df" % len(v), *v)
open(sys.argv[2], "wb").write(raw)
PY
}
claim "a hand-made --init file for the residual model" set_init
$MPIPE train $R --init "$TMP/init.st" --save-weights "$TMP/res1.st" >"$TMP/res1.out" 2>&1
by_hand() { # by_hand WEIGHTS.st RESULT_OUTPUT: one SGD step, computed here in double
    python3 - "$TMP/init.st" "$1" "$2" <<'PY'
import json, math, struct, sys
def load(p):
    raw = open(p, "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
    out = {}
    for k, v in h.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            out[k] = list(struct.unpack("<%df" % ((b - a) // 4), raw[8 + n + a:8 + n + b]))
    return out
def rows(v, n): return [v[i:i + n] for i in range(0, len(v), n)]
def lin(W, b, x):
    return [sum(W[o][c] * x[c] for c in range(len(x))) + (b[o] if b else 0) for o in range(len(W))]
def back(W, dy): return [sum(dy[o] * W[o][c] for o in range(len(W))) for c in range(len(W[0]))]
def add(*vs): return [sum(t) for t in zip(*vs)]
w, got = load(sys.argv[1]), load(sys.argv[2])
E, U = rows(w["L1.weight"], 2), rows(w["L5.weight"], 2)
W1, b1, W2, b2 = rows(w["L2.weight"], 2), w["L2.bias"], rows(w["L4.weight"], 2), w["L4.bias"]
ids, labels, lr, T = [2, 0], [0, 1], 0.5, 2
g = {k: [0.0] * len(v) for k, v in w.items()}
loss = 0
for t in range(T):
    h0 = E[ids[t]]
    a = [math.tanh(z) for z in lin(W1, b1, h0)]
    h1 = add(a, h0)                                   # block 1: x + tanh(dense(x))
    h2 = add(add(lin(W2, b2, h1), h1), h1)            # blocks 2, 3: (dense(y) + y) + y
    lg = lin(U, None, h2)
    m = max(lg); e = [math.exp(x - m) for x in lg]; s = sum(e)
    loss += -(lg[labels[t]] - m - math.log(s)) / T
    dl = [e[v] / s / T - (1 / T if v == labels[t] else 0) for v in range(3)]
    for v in range(3):
        for c in range(2): g["L5.weight"][v * 2 + c] += dl[v] * h2[c]
    dh2 = back(U, dl)
    for o in range(2):
        g["L4.bias"][o] += dh2[o]
        for c in range(2): g["L4.weight"][o * 2 + c] += dh2[o] * h1[c]
    dh1 = add(back(W2, dh2), dh2, dh2)                # through dense, then both skips
    dz = [dh1[o] * (1 - a[o] * a[o]) for o in range(2)]  # tanh' from its own output, not h1
    for o in range(2):
        g["L2.bias"][o] += dz[o]
        for c in range(2): g["L2.weight"][o * 2 + c] += dz[o] * h0[c]
    dh0 = add(back(W1, dz), dh1)
    for c in range(2): g["L1.weight"][ids[t] * 2 + c] += dh0[c]
for k in w:
    want = [x - lr * d for x, d in zip(w[k], g[k])]
    for x, y in zip(want, got[k]):
        assert abs(x - y) <= 1e-6 * (1 + abs(x)), (k, want, got[k])
out = open(sys.argv[3]).read().replace("\r", "\n").split("\n")
res = [l for l in out if l.startswith("RESULT")]
rl = float(dict(f.split("=") for f in res[-1].split()[1:])["loss"])
assert abs(rl - loss) < 1e-4, (rl, loss)
PY
}
claim "one rank: loss and every updated tensor equal the hand-computed step" \
    by_hand "$TMP/res1.st" "$TMP/res1.out"
$RUN $MPIPE train $R --init "$TMP/init.st" --save-weights "$TMP/res2.st" >"$TMP/res2.out" 2>&1
claim "two stages: the same bytes as one rank" cmp -s "$TMP/res1.st" "$TMP/res2.st"

# ---- weights saved under DESIGN.md §9's names: E once, the tied head has no tensor ----
$MPIPE train tests/data/gpt_tiny.mp --data "text:$TMP/ok.txt" --max-steps 0 \
    --save-weights "$TMP/gpt0.st" >/dev/null 2>&1
names() {
    python3 - "$TMP/gpt0.st" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
s = {k: v["shape"] for k, v in h.items() if k != "__metadata__"}
assert s["L1.weight"] == [256, 12] and s["L1.pos_weight"] == [7, 12], s
assert s["L3.in_proj_weight"] == [36, 12] and s["L3.in_proj_bias"] == [36], s
assert s["L3.out_proj.weight"] == [12, 12] and s["L3.out_proj.bias"] == [12], s
assert s["L5.weight"] == [20, 12] and s["L7.weight"] == [12, 20] and s["L14.weight"] == [12], s
assert not any(k.startswith("L15.") for k in s), "the tied lm_head (15) must have no tensor"
assert len(s) == 2 + 2 * (2 + 4 + 2 + 2 + 2) + 2, sorted(s)
PY
}
claim "gpt_tiny's weights: L1.weight, L1.pos_weight, attention's names, no head tensor" names

# ---- the token defaults (warm-up 100, cosine, clip 1, batch 32) learn in a 20-step try ----
python3 -c "
import random; random.seed(1); w = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'dog', 'ran', 'far']
open('$TMP/words.txt', 'w').write(' '.join(random.choice(w) for _ in range(3000)))"
G="tests/data/gpt_tiny.mp --data text:$TMP/words.txt"
v0=$($MPIPE train $G --max-steps 0 2>/dev/null | result_field val_loss)
v20=$($MPIPE train $G --max-steps 20 2>/dev/null | result_field val_loss)
claim "20 steps with the token defaults lower val_loss ($v0 -> $v20)" \
    python3 -c "assert float('$v20') < float('$v0') - 0.02"

# ---- plans: hand-made bounds on unit boundaries; inside a block refused; an old plan accepted ----
P="tests/data/seq_mlp.mp --data text:$TMP/ok.txt --batch 8 --micro-batches 4 --max-steps 3"
P="$P --seed 4 --lr 0.01 --lr-schedule constant --warmup 0"
$MPIPE plan tests/data/seq_mlp.mp --stages 2 --micro-batches 4 --batch 8 --schedule 1f1b \
    --out "$TMP/p.json" >/dev/null 2>&1 # one chunk per rank: the edits below move its boundary
bounds() { # bounds FIRST_LAYER_OF_STAGE_1 OUT: the plan with the boundary moved there
    python3 - "$TMP/p.json" "$1" "$2" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); k = int(sys.argv[2])
p["stages"][0]["last_layer"] = k - 1; p["stages"][1]["first_layer"] = k
json.dump(p, open(sys.argv[3], "w"))
PY
}
bounds 17 "$TMP/p17.json" # stage 1 = lm_head + softmax_xent: E's holders on two ranks
bounds 5 "$TMP/p5.json"   # layer 5 is inside the second residual block (4..8)
$MPIPE train $P --save-weights "$TMP/one.st" >/dev/null 2>&1
$RUN $MPIPE train $P --plan "$TMP/p17.json" --save-weights "$TMP/p17.st" >/dev/null 2>&1
claim "a hand-made plan (head alone on rank 1): the one-rank bytes" \
    cmp -s "$TMP/one.st" "$TMP/p17.st"
claim "a plan cutting a residual block exits 2 naming the line" \
    refused "inside a residual block" $RUN $MPIPE train $P --plan "$TMP/p5.json"
plan_on_units() { # every stage mpipe plan makes for models/gpt.mp starts a partition unit
    for a in "--stages 3" "--stages 5 --schedule zb1" "--stages 12" \
        "--stages 3 --schedule interleaved --chunks 2"; do
        $MPIPE plan models/gpt.mp $a --out "$TMP/g.json" >/dev/null 2>&1 || return 1
        python3 - "$TMP/g.json" <<'PY' || return 1
import json, sys
starts = {1, 2, 4, 8, 10, 14, 16, 20, 22, 26, 27, 28}  # embed, 8 residual blocks, ln, head, loss
firsts = [st["first_layer"] for st in json.load(open(sys.argv[1]))["stages"]]
assert set(firsts) <= starts, firsts
PY
    done
}
claim "mpipe plan cuts models/gpt.mp only between units (P = 3, 5, 12; interleaved 3 x 2)" \
    plan_on_units
claim "a plan written before blocks existed (7694cc8, models/mlp.mp) still trains" \
    exits_with 0 "" $MPIPE train models/mlp.mp --plan tests/data/plan_mlp_7694cc8.json \
    --data synthetic:64 --max-steps 1
finish
