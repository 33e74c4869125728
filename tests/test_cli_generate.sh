#!/usr/bin/env bash
# `mpipe generate` as users meet it (DESIGN.md §9): prompt then continuation on stdout, the same
# text for the same seed, greedy at --temperature 0, going on past the context, weights from
# --save-weights or from a checkpoint written with 2 stages (the same text), and bad input refused
# with exit 2 (3 when nothing can be read). Usage: test_cli_generate.sh path/to/mpipe (repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
M=tests/data/gpt_tiny.mp # T = 7: 40 new bytes cross the context several times
D="--data text:README.md --batch 8 --micro-batches 2 --seed 3 --max-steps 12"

$MPIPE train $M $D --save-weights "$TMP/w.st" --checkpoint "$TMP/ck1" >/dev/null 2>&1
# zbv: the layers in two of its four stage files (1F1B's split of this model left stage 1 only the
# tied head, no tensor of its own)
mpirun -np 2 $MPIPE train $M $D --stages 2 --schedule zbv --checkpoint "$TMP/ck2" >/dev/null 2>&1
gen() { $MPIPE generate $M "$@" 2>"$TMP/gen_err"; }

gen --weights "$TMP/w.st" --prompt "The pipe" --tokens 40 --seed 5 > "$TMP/a.txt"
gen --weights "$TMP/w.st" --prompt "The pipe" --tokens 40 --seed 5 > "$TMP/b.txt"
gen --weights "$TMP/w.st" --prompt "The pipe" --tokens 40 --seed 6 > "$TMP/c.txt"
claim "prints the prompt, then exactly --tokens bytes past the context" \
    bash -c "[ \"\$(head -c 8 '$TMP/a.txt')\" = 'The pipe' ] && [ \$(wc -c < '$TMP/a.txt') -eq 48 ]"
claim "the same seed gives the same text" cmp -s "$TMP/a.txt" "$TMP/b.txt"
claim "another seed gives another text" bash -c "! cmp -s '$TMP/a.txt' '$TMP/c.txt'"
claim "a summary goes to stderr" grep -q "40 tokens in" "$TMP/gen_err"

gen --weights "$TMP/w.st" --prompt "ab" --tokens 30 --temperature 0 --seed 1 > "$TMP/g1.txt"
gen --weights "$TMP/w.st" --prompt "ab" --tokens 30 --temperature 0 --seed 2 > "$TMP/g2.txt"
gen --weights "$TMP/w.st" --prompt "ab" --tokens 30 --temperature 1 --top-k 1 > "$TMP/g3.txt"
claim "--temperature 0 is greedy: no seed matters, and it equals --top-k 1" \
    bash -c "cmp -s '$TMP/g1.txt' '$TMP/g2.txt' && cmp -s '$TMP/g1.txt' '$TMP/g3.txt'"

gen --checkpoint "$TMP/ck1" --prompt "The pipe" --tokens 40 --seed 5 > "$TMP/k1.txt"
gen --checkpoint "$TMP/ck2" --prompt "The pipe" --tokens 40 --seed 5 > "$TMP/k2.txt"
claim "a checkpoint gives the text its run's --save-weights gives" cmp -s "$TMP/a.txt" "$TMP/k1.txt"
claim "... and so does one written by 2 stages" cmp -s "$TMP/a.txt" "$TMP/k2.txt"
claim "--tokens 0 prints only the prompt" \
    bash -c "[ \"\$($MPIPE generate $M --weights '$TMP/w.st' --prompt xyz --tokens 0 2>/dev/null)\" = xyz ]"

printf 'input tokens 7\nembed 97 12\nattention 3\nlm_head\nsoftmax_xent\n' > "$TMP/v97.mp"
$MPIPE train "$TMP/v97.mp" --data synthetic:64 --batch 8 --max-steps 0 \
    --save-weights "$TMP/v97.st" >/dev/null 2>&1
claim "a prompt byte beyond V exits 2 naming it" \
    refused "outside the model's vocabulary (V = 97)" $MPIPE generate "$TMP/v97.mp" \
    --weights "$TMP/v97.st" --prompt "abc~"
printf 'input tokens 7\nembed 300 12\nattention 3\nlm_head\nsoftmax_xent\n' > "$TMP/v300.mp"
$MPIPE train "$TMP/v300.mp" --data synthetic:64 --batch 8 --max-steps 0 \
    --save-weights "$TMP/v300.st" >/dev/null 2>&1
claim "a model whose ids do not fit a byte (V = 300) exits 2 naming it (ids mod 256 came out)" \
    refused "v300.mp: its vocabulary has 300 ids; generate writes each token as one byte" \
    $MPIPE generate "$TMP/v300.mp" --weights "$TMP/v300.st" --prompt "ab"
claim "weights of another model exit 2" \
    refused "another model" $MPIPE generate "$TMP/v97.mp" --weights "$TMP/w.st"
claim "a checkpoint of another model exits 2" \
    refused "another model" $MPIPE generate "$TMP/v97.mp" --checkpoint "$TMP/ck1"
# A checkpoint's stage file as --weights: one of several stages is refused for what it is (it was
# "written for another model"); a 1-stage checkpoint's file holds the whole model: used, with a note.
claim "one stage file of a 2-stage checkpoint exits 2 saying what it is" \
    refused "stage-0.safetensors is one stage file of a checkpoint .*--checkpoint DIR" \
    $MPIPE generate $M --weights "$TMP/ck2/step-12/stage-0.safetensors"
gen --weights "$TMP/ck1/step-12/stage-0.safetensors" --prompt "The pipe" --tokens 40 --seed 5 \
    >"$TMP/s1.txt"
claim "a 1-stage checkpoint's file gives its run's text, with a note" \
    bash -c "cmp -s '$TMP/a.txt' '$TMP/s1.txt' && grep -q \"is a checkpoint's stage file\" '$TMP/gen_err'"
head -c 300 "$TMP/w.st" > "$TMP/trunc.st"
claim "a truncated weights file exits 2 with a byte offset" \
    refused "byte" $MPIPE generate $M --weights "$TMP/trunc.st"
claim "a negative --tokens exits 2" refused "\-\-tokens" $MPIPE generate $M --weights "$TMP/w.st" \
    --tokens -3
claim "--weights and --checkpoint together exit 2" refused "exactly one" $MPIPE generate $M \
    --weights "$TMP/w.st" --checkpoint "$TMP/ck1"
claim "a missing weights file exits 3" exits_with 3 "nope.st" $MPIPE generate $M --weights \
    "$TMP/nope.st"
sed 's/attention 3/attention 3 causal=0/' $M > "$TMP/full.mp"
claim "non-causal attention exits 2" refused "causal" $MPIPE generate "$TMP/full.mp" \
    --weights "$TMP/w.st"

# A damaged newest checkpoint falls back to the previous one (with a note); none left: exit 3.
$MPIPE train $M $D --max-steps 14 --checkpoint "$TMP/ck1" --resume >/dev/null 2>&1
f=$(ls "$TMP/ck1/step-14/"*.safetensors | head -1)
printf 'XXXX' | dd of="$f" bs=1 seek=200 conv=notrunc 2>/dev/null
gen --checkpoint "$TMP/ck1" --prompt "The pipe" --tokens 40 --seed 5 > "$TMP/k3.txt"
claim "a damaged checkpoint falls back to the older one, saying so" \
    bash -c "cmp -s '$TMP/a.txt' '$TMP/k3.txt' && grep -q 'step-14 is unusable' '$TMP/gen_err'"
for s in "$TMP"/ck1/step-*/; do
    g=$(ls "$s"*.safetensors | head -1)
    printf 'XXXX' | dd of="$g" bs=1 seek=200 conv=notrunc 2>/dev/null
done
claim "no valid checkpoint left exits 3" exits_with 3 "no valid checkpoint" $MPIPE generate $M \
    --checkpoint "$TMP/ck1"
claim "generate --help documents the flags" bash -c "$MPIPE generate --help | grep -q -- --top-k"
finish
