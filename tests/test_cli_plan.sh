#!/usr/bin/env bash
# Claims about `mpipe plan` and `mpipe sim` as a user meets them: the plan JSON has the keys of
# DESIGN.md §5, bad input exits 2 with a message saying what to change, the rankfile is accepted
# by a real `mpirun --rankfile`, oversubscribed plans warn and say so, and `sim` writes a trace and
# an SVG. This machine's rates, measured and cached: test_cli_calib.sh.
# Usage: test_cli_plan.sh path/to/mpipe (run from the repository root).
# shellcheck source=tests/cli_plan_lib.sh
. "$(dirname "$0")/cli_plan_lib.sh"

expect_exit 0 "plan --help" "$MPIPE" plan --help
grep -q -- "--memory-per-rank" "$T/out" && ok "help documents --memory-per-rank" || bad "help"

expect_exit 0 "plan mlp --stages 2 --json --out" \
    "$MPIPE" plan models/mlp.mp --stages 2 --json --out "$T/plan.json"
cp "$T/out" "$T/stdout.json"
for key in model digest schedule P D V M batch layers stages step_s bubble samples_per_s \
    oversubscribed cost_source compute_s param_bytes act_bytes_out first_layer last_layer ranks \
    host cores act_bytes peak_mem_bytes; do
    if grep -q "\"$key\"" "$T/plan.json" && grep -q "\"$key\"" "$T/stdout.json"; then
        ok "plan JSON has \"$key\""
    else
        bad "plan JSON lacks \"$key\""
    fi
done
grep -q '"oversubscribed": false' "$T/plan.json" && ok "2 ranks not oversubscribed" \
    || bad "2 ranks marked oversubscribed"

expect_exit 0 "plan table" "$MPIPE" plan models/mlp.mp --stages 2
grep -q "bottleneck: stage" "$T/out" && grep -q "samples/s" "$T/out" && grep -q "mpirun -np 2" \
    "$T/out" && ok "table names the bottleneck and the mpirun line" || bad "table content"

# Without --schedule the planner weighs the schedules itself: its pick predicts a step no slower
# than any schedule named explicitly, zbv among them.
step_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step_s'])" "$1"; }
"$MPIPE" plan models/mlp.mp --stages 2 --batch 1024 --out "$T/pick.json" >/dev/null 2>"$T/err"
slower=0
for s in 1f1b interleaved zb1 zbv; do
    "$MPIPE" plan models/mlp.mp --stages 2 --batch 1024 --schedule $s --out "$T/$s.json" \
        >/dev/null 2>"$T/err"
    python3 -c "import sys; sys.exit(float(sys.argv[1]) < float(sys.argv[2]) * (1 - 1e-9))" \
        "$(step_of "$T/$s.json")" "$(step_of "$T/pick.json")" || slower=1
done
[ $slower -eq 0 ] && ok "plan without --schedule predicts no slower than any named schedule" \
    || bad "plan's own schedule pick is slower than a named one"
grep -q '"schedule": "zbv"' "$T/zbv.json" && grep -q '"V": 2' "$T/zbv.json" \
    && ok "a zbv plan has 2 chunks per rank" || bad "zbv plan V"

# Replicas step in lock-step: on a hybrid CPU (2 performance cores, 2 at half speed) data
# parallelism over all 4 runs at the efficiency cores' pace, though replica 0 has a fast core.
slowdowns() { python3 -c "import json,sys; print(*[s['slowdown'] for s in json.load(open(sys.argv[1]))['stages']])" "$1"; }
"$MPIPE" plan models/mlp.mp --stages 1 --dp 4 --memory-per-rank 1G \
    --topology tests/data/topo_hybrid.xml --out "$T/hybrid.json" >/dev/null 2>"$T/err"
[ "$(slowdowns "$T/hybrid.json")" = "2.0" ] \
    && ok "--dp 4 on a hybrid CPU: the stage runs at its slowest replica's pace" \
    || bad "--dp 4 on a hybrid CPU: slowdown $(slowdowns "$T/hybrid.json"), not 2"

# A model file that cannot be read is exit 3 (DESIGN.md §4), as train, bench and generate say it;
# plan alone said 2 until 2026-12-08.
expect_exit 3 "unknown model file" "$MPIPE" plan models/no_such_model.mp --stages 2
expect_exit 2 "more stages than layers" "$MPIPE" plan models/mlp.mp --stages 64
grep -q -- "--stages" "$T/err" && ok "message says which --stages fits" || bad "stages message"
expect_exit 2 "impossible memory cap" "$MPIPE" plan models/mlp.mp --stages 2 --memory-per-rank 1K
grep -q -- "--memory-per-rank" "$T/err" && ok "message says to raise --memory-per-rank" \
    || bad "memory message"
# Nothing fits: the message names the fewest stages and the cap this layout needs, in MiB, with
# the --recompute asked for; the cap it names fits and one MiB less does not. (62M: at 60M no
# number of stages fits gpt.mp without recomputing once the hand-off slots a rank reads count,
# and the message says so.)
G="models/gpt.mp --stages 2 --batch 8 --micro-batches 4 --schedule 1f1b"
cap_asked() { sed -n 's/.*give this layout a cap of at least \([0-9]*\)M.*/\1/p' "$T/err"; }
for rc in auto none; do
    expect_exit 2 "--recompute $rc: a cap nothing fits" "$MPIPE" plan $G --recompute $rc \
        --memory-per-rank 62M
    need=$(cap_asked)
    stages=$(sed -n 's/.*the fewest stages that fit under this cap are \([0-9]*\) .*/\1/p' "$T/err")
    [ -n "$need" ] && [ -n "$stages" ] && ! grep -q bytes "$T/err" \
        && ok "--recompute $rc: the message names the fewest stages and a cap in MiB" \
        || bad "--recompute $rc: message"
    expect_exit 0 "--recompute $rc: the cap it asks for fits" "$MPIPE" plan $G --recompute $rc \
        --memory-per-rank "${need:-0}M"
    expect_exit 2 "--recompute $rc: one MiB less does not" "$MPIPE" plan $G --recompute $rc \
        --memory-per-rank "$((${need:-1} - 1))M"
    expect_exit 0 "--recompute $rc: the fewest stages it names fit" "$MPIPE" plan \
        models/gpt.mp --stages "${stages:-0}" --batch 8 --micro-batches 4 --schedule 1f1b \
        --recompute $rc --memory-per-rank 62M
done
expect_exit 2 "--recompute none: a cap nothing fits" "$MPIPE" plan $G --recompute none \
    --memory-per-rank 60M
need=$(cap_asked)
with_rc=$(sed -n 's/.*at least [0-9]*M[^(]* (\([0-9]*\)M with --recompute auto).*/\1/p' "$T/err")
[ -n "$with_rc" ] && [ -n "$need" ] && [ "$with_rc" -lt "$need" ] \
    && ok "--recompute none: the message also says what recomputing would need (${with_rc}M)" \
    || bad "--recompute none: no recomputing figure below ${need}M"
expect_exit 0 "--recompute auto: the cap named for recomputing fits" "$MPIPE" plan $G \
    --recompute auto --memory-per-rank "${with_rc:-0}M"
# The "needs" figure is the plan made without a cap (its fastest split); a split made under a cap
# can need less, which the cap asked for counts: said, so the two do not read as a contradiction (zbv, 4 stages, M 4:
# "needs 87 MiB ... a cap of at least 82M", and 82M plans).
GZ="models/gpt.mp --stages 4 --batch 8 --micro-batches 4 --schedule zbv"
expect_exit 2 "zbv on 4 stages under 64M: nothing fits" "$MPIPE" plan $GZ --memory-per-rank 64M
zneed=$(cap_asked)
grep -q "needs [0-9]* MiB in the plan made without a cap, over" "$T/err" \
    && ok "... the needs figure says whose it is (cap asked: ${zneed:-none}M)" \
    || bad "... needs figure unqualified: $(cat "$T/err")"
expect_exit 0 "... and the cap it asks for plans" "$MPIPE" plan $GZ --memory-per-rank "${zneed:-0}M"
# Without --micro-batches the advice is the smallest over the M a plan would try, as the plan
# under that cap takes whichever M fits (at the default M alone it asked 2 stages of gpt.mp for
# 91M where 64M planned); on --stages auto --ranks 2, the smallest over the splits of 2, named.
GA="models/gpt.mp --batch 8 --schedule 1f1b"
expect_exit 2 "2 stages, any M: a cap nothing fits" "$MPIPE" plan $GA --stages 2 --memory-per-rank 20M
need=$(cap_asked)
expect_exit 0 "... the cap it asks for fits (${need:-none}M)" "$MPIPE" plan $GA --stages 2 \
    --memory-per-rank "${need:-0}M"
expect_exit 2 "... and one MiB less does not" "$MPIPE" plan $GA --stages 2 \
    --memory-per-rank "$((${need:-1} - 1))M"
expect_exit 2 "--stages auto --ranks 2: a cap nothing fits" "$MPIPE" plan $GA --stages auto \
    --ranks 2 --memory-per-rank 20M
split=$(sed -n 's/.* give the 2 ranks (as \([0-9]*\) stages\{0,1\} x \([0-9]*\) replicas\{0,1\}) a cap of at least \([0-9]*\)M.*/--stages \1 --dp \2 --memory-per-rank \3M/p' "$T/err")
[ -n "$split" ] && ok "... it names the split of 2 ranks and its cap ($split)" || bad "auto: $(cat "$T/err")"
expect_exit 0 "... which plans" "$MPIPE" plan $GA ${split:---stages 0}
# More stages than gpt.mp's 12 units: the reason that holds for every schedule (zbv's 2 chunks
# per rank used to answer "use --stages 6 or fewer", though 12 plans).
expect_exit 2 "13 stages of 12 units" "$MPIPE" plan models/gpt.mp --stages 13 --batch 8 --micro-batches 4
grep -q -- "use --stages 12 or fewer" "$T/err" && ok "... the message names 12, not zbv's 6" \
    || bad "13 stages: $(cat "$T/err")"
expect_exit 0 "... and 12 stages plan" "$MPIPE" plan models/gpt.mp --stages 12 --batch 8 --micro-batches 4
# Too many chunks for the stages: the fix is fewer chunks (it used to say "use --stages 1 or fewer").
expect_exit 2 "2 stages x 7 chunks of 12 units" "$MPIPE" plan models/gpt.mp --stages 2 \
    --schedule interleaved --chunks 7 --batch 8 --micro-batches 4
grep -q -- "use --chunks 6 or fewer, or fewer --stages" "$T/err" && ok "... the message names --chunks 6" \
    || bad "7 chunks: $(cat "$T/err")"
expect_exit 2 "unknown flag" "$MPIPE" plan models/mlp.mp --stages 2 --colour blue
expect_exit 2 "bad schedule" "$MPIPE" plan models/mlp.mp --stages 2 --schedule 3f3b
expect_exit 2 "batch not divisible by M" "$MPIPE" plan models/mlp.mp --stages 2 --micro-batches 7
expect_exit 2 "bad topology XML" "$MPIPE" plan models/mlp.mp --stages 2 \
    --topology tests/data/topo_bad.xml
grep -q "topo_bad.xml" "$T/err" && ok "XML error names the file" || bad "XML message"
# Files that segfault hwloc 2.9's own import (lstopo too) and hand-broken exports: each is exit 2
# naming the file and the line, never a signal.
for f in tests/fuzz/upstream/hwloc/*.xml tests/data/topo_hostile/*.xml; do
    line=$(sed -n 's/.*<!-- expect line \([0-9]*\):.*/\1/p' "$f")
    expect_exit 2 "hostile topology $(basename "$f")" "$MPIPE" plan models/mlp.mp --stages 2 \
        --topology "$f"
    grep -q "^mpipe plan: $f:$line: " "$T/err" && ok "  its message names $f:$line" \
        || bad "  message for $f"
done
printf 'node1 slots=1\nnode2 slots=1 topology=%s\n' \
    tests/fuzz/upstream/hwloc/segv-in-hwloc_bitmap_or.xml >"$T/hosts"
expect_exit 2 "hostfile naming a hostile topology" "$MPIPE" plan models/mlp.mp --stages 2 \
    --hosts "$T/hosts"
grep -q "hosts:2: host node2: tests/fuzz/upstream/hwloc/segv-in-hwloc_bitmap_or.xml:7: " \
    "$T/err" && ok "  its message names the hostfile line and the XML line" || bad "  hosts msg"
# Replicas on two hosts reduce through messages: no shared segment counted. On one host every
# replica maps the whole segment the 2 replicas share (each one's received chunks and summed
# chunk: the arena and a D-th of it, twice), against the arena a replica on its own keeps: D
# arenas more.
peak0() { python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print(p['stages'][0]['peak_mem_bytes'], p['stages'][0]['param_bytes'])" "$1"; }
printf 'hA slots=2\n' >"$T/hosts"
expect_exit 0 "plan 2 replicas on one host" "$MPIPE" plan models/cnn.mp --stages 1 --dp 2 \
    --micro-batches 2 --hosts "$T/hosts" --out "$T/dp1h.json"
printf 'hA slots=1\nhB slots=1\n' >"$T/hosts"
expect_exit 0 "plan 2 replicas on two hosts" "$MPIPE" plan models/cnn.mp --stages 1 --dp 2 \
    --micro-batches 2 --hosts "$T/hosts" --out "$T/dp2h.json"
read -r one params <<<"$(peak0 "$T/dp1h.json")"
read -r two _ <<<"$(peak0 "$T/dp2h.json")"
python3 -c "import sys; d = int(sys.argv[1]) - int(sys.argv[2]); assert abs(d - 2 * int(sys.argv[3])) < 4096, d" \
    "$one" "$two" "$params" && ok "replicas on two hosts are planned without the shared segment ($two, $one on one)" ||
    bad "peak on two hosts $two, on one $one, params $params"
printf 'node1 slots=2\nnode2 slots=two\n' >"$T/hosts"
expect_exit 2 "bad hostfile" "$MPIPE" plan models/mlp.mp --stages 2 --hosts "$T/hosts"
grep -q "hosts:2:" "$T/err" && ok "hostfile error has FILE:LINE" || bad "hostfile message"

expect_exit 0 "irregular XML topology" "$MPIPE" plan models/cnn.mp --stages 3 \
    --topology tests/data/topo_two_sockets_irregular.xml --rankfile "$T/rf3"
grep -q "rank 2=twosock slot=1:0" "$T/rf3" && ok "rankfile uses socket:core" || bad "rankfile S:C"
expect_exit 0 "stages auto" "$MPIPE" plan models/mlp.mp --stages auto --ranks 2
expect_exit 0 "interleaved + params" "$MPIPE" plan models/cnn.mp --stages 2 \
    --schedule interleaved --partition params

# Measured inputs: a layer profile and a p2p table replace the analytic defaults.
mlp_profile "$T/profile.json"
expect_exit 0 "plan --profile" "$MPIPE" plan models/mlp.mp --stages 2 --json \
    --profile "$T/profile.json"
grep -q '"cost_source": "profile:' "$T/out" && ok "cost_source names the profile" \
    || bad "cost_source"
expect_exit 2 "profile of another model" "$MPIPE" plan models/cnn.mp --stages 2 \
    --profile "$T/profile.json"
# The same layer kinds but another model's digest (a wider layer priced at the narrow one's
# cost, accepted without a word); an unreadable profile is an I/O failure (exit 3).
sed 's/^{"rows"/{"digest": "0000000000000000", "rows"/' "$T/profile.json" >"$T/profile_other.json"
expect_exit 2 "a profile recording another model's digest" "$MPIPE" plan models/mlp.mp \
    --stages 2 --profile "$T/profile_other.json"
grep -q "a profile of another model (digest 0000000000000000" "$T/err" &&
    ok "  ... names the digests" || bad "profile digest message: $(cat "$T/err")"
expect_exit 3 "an unreadable --profile" "$MPIPE" plan models/mlp.mp --stages 2 \
    --profile "$T/nowhere.json"
cat >"$T/p2p.json" <<'JSON'
{"rows": [{"src": 0, "dst": 1, "bytes": 1, "latency_us": 0.3, "pingpong_GBps": 0.01,
           "bandwidth_GBps": 0.02, "bibw_GBps": 0.03, "relation": "L3"},
          {"src": 0, "dst": 1, "bytes": 4194304, "latency_us": 500, "pingpong_GBps": 8,
           "bandwidth_GBps": 9.5, "bibw_GBps": 12, "relation": "L3"}]}
JSON
expect_exit 0 "plan --links" "$MPIPE" plan models/mlp.mp --stages 2 --links "$T/p2p.json"
sed 's/"L3"/"moon"/' "$T/p2p.json" >"$T/p2p_bad.json"
expect_exit 2 "links with an unknown relation" "$MPIPE" plan models/mlp.mp --stages 2 \
    --links "$T/p2p_bad.json"
grep -q "relation" "$T/err" && ok "links error names the key" || bad "links message"
sed 's/"bandwidth_GBps": 9.5/"bandwidth_GBps": 0/; s/"bandwidth_GBps": 0.02/"bandwidth_GBps": 0/' \
    "$T/p2p.json" >"$T/p2p_zero.json"
expect_exit 2 "links with no bandwidth (it fell back to the defaults silently)" "$MPIPE" plan \
    models/mlp.mp --stages 2 --links "$T/p2p_zero.json"

expect_exit 0 "plan with --rankfile" "$MPIPE" plan models/mlp.mp --stages 2 --rankfile "$T/rf"
expect_exit 0 "mpirun accepts the rankfile" mpirun --rankfile "$T/rf" -np 2 hostname

expect_exit 0 "oversubscribed plan" "$MPIPE" plan models/mlp.mp --stages 6 --json \
    --rankfile "$T/rf6"
grep -q '"oversubscribed": true' "$T/out" && ok "oversubscribed: true" || bad "oversubscribed key"
grep -q "oversubscribed" "$T/err" && ok "oversubscription warned on stderr" || bad "no warning"
expect_exit 0 "mpirun accepts the oversubscribed rankfile" \
    mpirun --oversubscribe --rankfile "$T/rf6" -np 6 hostname

expect_exit 0 "sim with trace and svg" "$MPIPE" sim "$T/plan.json" --trace "$T/t.json" \
    --svg "$T/t.svg"
grep -q "bubble" "$T/out" && ok "sim prints the bubble" || bad "sim output"
# The plan carries what its prediction used (each pass's packing part included: with several
# micro-batches a rank keeps its weights packed), so sim predicts the plan's own step.
sim_step=$(sed -n 's/^predicted step \([0-9.]*\) ms.*/\1/p' "$T/out")
plan_step=$(python3 -c "import json, sys; print('%.3f' % (1e3 * json.load(open(sys.argv[1]))['step_s']))" \
    "$T/plan.json")
[ -n "$sim_step" ] && [ "$sim_step" = "$plan_step" ] &&
    ok "sim predicts the plan's own step ($sim_step ms)" || bad "sim $sim_step ms, plan $plan_step ms"
grep -q "traceEvents" "$T/t.json" && ok "trace written" || bad "trace"
grep -q "<svg" "$T/t.svg" && ok "svg written" || bad "svg"
echo '{"model": "x"}' >"$T/broken.json"
expect_exit 2 "sim rejects a malformed plan" "$MPIPE" sim "$T/broken.json"

# Measured machine rates instead of the documented default (mpipe bench gemm --json rows).
echo '{"rows": [{"m": 256, "n": 1024, "k": 1024, "path": "native", "gflops": 123.0}]}' >"$T/rates.json"
expect_exit 0 "plan --rates takes a bench gemm file" "$MPIPE" plan models/mlp.mp --stages 2 \
    --rates "$T/rates.json" --json
grep -q '"cost_source": "analytic, GEMM 123 GFLOPS measured"' "$T/out" &&
    ok "the plan records the measured rate as its cost source" || bad "cost_source with --rates"
echo '{"rows": [{"m": 32, "gflops": 40}]}' >"$T/rates_small.json"
expect_exit 2 "plan --rates without a row of 256+ rows is refused" "$MPIPE" plan models/mlp.mp \
    --stages 2 --rates "$T/rates_small.json"

# Usage errors of --stages P come before the machine is measured (they came after up to 21 s of
# calibration): a fresh cache, and no "measured" line.
expect_exit 2 "--micro-batches not a multiple of --dp, on an empty cache" env \
    XDG_CACHE_HOME="$T/fresh_cache" "$MPIPE" plan models/tiny_mlp.mp --stages 2 --dp 3 \
    --micro-batches 4
grep -q "not a multiple of --dp 3" "$T/err" && ! grep -q "measured" "$T/err" &&
    ok "  ... said before measuring anything" || bad "usage after calibration: $(cat "$T/err")"
expect_exit 2 "more stages than layers, on an empty cache" env XDG_CACHE_HOME="$T/fresh_cache" \
    "$MPIPE" plan models/tiny_mlp.mp --stages 99
grep -q "cannot split" "$T/err" && ! grep -q "measured" "$T/err" &&
    ok "  ... said before measuring anything" || bad "split after calibration: $(cat "$T/err")"

done_claims
