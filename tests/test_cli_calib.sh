#!/usr/bin/env bash
# Claims about the rates `mpipe plan` measures on this machine when given neither --profile nor
# --rates: measured once, cached, reused, measured again on --recalibrate or when the machine
# has left them; the reduction between replicas and the links between ranks measured by MPI jobs
# of the plan's own; a run of the plan sets its step beside the plan's. Its claims time this
# machine: the suite runs it alone (RUN_SERIAL, tests/CMakeLists.txt).
# Usage: test_cli_calib.sh path/to/mpipe (run from the repository root).
# shellcheck source=tests/cli_plan_lib.sh
. "$(dirname "$0")/cli_plan_lib.sh"
mlp_profile "$T/profile.json"

# This machine's rates (no --profile, no --rates): measured once, cached per machine under
# $XDG_CACHE_HOME/mpipe/, reused, refreshed on --recalibrate; a corrupt or foreign cache is
# ignored with a warning and rewritten; --profile overrides and measures nothing.
export XDG_CACHE_HOME="$T/calib"
src() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['cost_source'])" "$1"; }
cached() { python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['gemm']))" "$1"; }
plan_tiny() { "$MPIPE" plan models/tiny_mlp.mp --stages 2 --batch 64 --out "$T/c.json" "$@"; }
expect_exit 0 "plan measures this machine without --profile" plan_tiny
cache=$(ls "$T"/calib/mpipe/rates-*.json 2>/dev/null | head -1)
[ -n "$cache" ] && ok "the rates are cached under \$XDG_CACHE_HOME/mpipe/" || bad "no cache file"
case "$(src "$T/c.json")" in "measured: "*" timed now, 0 from the cache"*)
    ok "the plan records its rates as measured now" ;; *) bad "cost_source: $(src "$T/c.json")" ;;
esac
n=$(cached "$cache")
expect_exit 0 "a second plan" plan_tiny
case "$(src "$T/c.json")" in *"(0 timed now, $n from the cache)"*)
    ok "a second plan reuses every cached shape" ;; *) bad "reuse: $(src "$T/c.json")" ;;
esac
expect_exit 0 "plan --recalibrate" plan_tiny --recalibrate
case "$(src "$T/c.json")" in *"($n timed now, 0 from the cache)"*)
    ok "--recalibrate measures again" ;; *) bad "recalibrate: $(src "$T/c.json")" ;;
esac
# A size whose in-place step a slow spell of the machine stretched (injected: 2x at 32 samples,
# between 64 and 16) is timed again, and its price is the second timing's: under 1.6x its
# neighbours' per flop in the same calibration, as mpipe says ("now +N%"). The yardstick was the
# 32-sample step of the calibration before; in the sanitizer build beside other tests two
# calibrations 0.5 s apart timed it 1.65x apart (0.109 and 0.180 ms) while the re-timed step was
# +2% on its own neighbours.
expect_exit 0 "plan --recalibrate with the 32-sample step stretched 2x" \
    env MPIPE_CALIB_SLOW=32:2 "$MPIPE" plan models/tiny_mlp.mp --stages 2 --batch 64 \
    --out "$T/c.json" --recalibrate
now32=$(sed -n 's/.*step at 32 samples ran [0-9]*% slower per flop than at 64 and 16: timed again, now \([-+][0-9]*\)%$/\1/p' "$T/err")
[ -n "$now32" ] && [ "$now32" -lt 60 ] &&
    ok "a spiked size is timed again and says so (now ${now32}% on its neighbours, per flop)" ||
    bad "spike: $(grep -a 'timed again' "$T/err")"
# Rates that no longer describe the machine (its in-place steps injected 4x slow, as a busier
# or slower host would run them) are measured again, and so are they when it is fast again.
# Slower is not at once: the first check that finds the machine slower keeps the rates and marks
# the cache (a VM's cores slow down for seconds to minutes, and a calibration made in such a
# minute priced a model 30% slow for the plans after it); a check 5 to 60 minutes after the mark
# (here, the mark set back 10 minutes) that finds it slower still measures again.
# 4x, not 2x: in the sanitizer build the probe (the process's first compute) times the step
# 1.1-1.5x the calibration's seconds before, so the machine fast again probed 0.55-0.75x a 2x
# cache, and one CI run met a slow spell on top: 0.87x. At 4x a spell must stretch the probe
# 2.3x more to hide it. mpipe prints the ratio to two places, so the faster side's bound is
# 1/1.15 rounded up: that run's ratio was past mpipe's bound (under 0.8696, or mpipe would not
# have measured again) and printed 0.87, which failed the test's old bound on the printed figure.
took() { sed -n "s/.*'s step at [0-9]* samples took \([0-9.]*\)x its cached time in 3 timings: this machine's rates are measured again\( (slower since a check [0-9]* minutes ago)\)\{0,1\}$/\1/p" "$T/err"; }
kept() { sed -n "s/.*'s step at [0-9]* samples took \([0-9.]*\)x its cached time in 3 timings: the cached rates are kept for now, .* first found slower \([0-9]*\) s ago, .*/\1 \2/p" "$T/err"; }
mark() { python3 -c "
import json, sys, time; d = json.load(open(sys.argv[1]))
if sys.argv[2] == 'get': print(round(time.time() - d['slower_since']) if 'slower_since' in d else 'none')
else: d['slower_since'] = time.time() - float(sys.argv[2]); json.dump(d, open(sys.argv[1], 'w'))
" "$cache" "$1"; }
probed() { (unset MPIPE_CALIB_DRIFT; "$@"); }
# A plan from the cache checks it against the machine and says how near it is, every time. Past
# its bound it says so in the words of the claims below instead (the sanitizer build's check runs
# 1.1-1.5x the calibration's step, so a slow moment can take it there).
probed_line() { grep -a "^mpipe plan: .*'s step at [0-9]* samples took [0-9.]*x its cached time" "$T/err"; }
expect_exit 0 "a plan that checks the cache" probed plan_tiny
case "$(probed_line)" in
"mpipe plan: the cached rates stand: models/tiny_mlp.mp's step at "*" samples took "*"x its cached time (measured again past 0.87x or 1.15x in 3 timings in a row)")
    ok "it says the cached rates stand, and how near ($(probed_line | sed 's/.* took \([0-9.]*x\).*/\1/'))" ;;
*"x its cached time in 3 timings: this machine's rates are measured again"*|*"the cached rates are kept for now"*)
    ok "it says the cache no longer describes the machine (a slow moment)" ;;
*) bad "no check of the cache said: $(grep -a 'mpipe plan' "$T/err")" ;;
esac
mark 3600000 # an old mark (over an hour): a slowdown of its own, the next check starts afresh
expect_exit 0 "a plan on a machine 4x slower than its cache" \
    probed env MPIPE_CALIB_SLOW=all:4 "$MPIPE" plan models/tiny_mlp.mp --stages 2 --batch 64 \
    --out "$T/c.json"
x=$(kept)
[ -n "$x" ] && python3 -c "import sys; assert float(sys.argv[1]) >= 1.15 and int(sys.argv[2]) <= 1" $x &&
    case "$(src "$T/c.json")" in *"(0 timed now, $n from the cache)"*) true ;; *) false ;; esac &&
    [ "$(mark get)" -le 5 ] &&
    ok "a machine slower than its cache says so ($x) and keeps the rates, marked, for now" ||
    bad "slower, first: ${x:-no keep}; $(src "$T/c.json"); mark $(mark get)"
mark 600 # the first check found it slower 10 minutes ago
expect_exit 0 "a plan on a machine still 4x slower 10 minutes on" \
    probed env MPIPE_CALIB_SLOW=all:4 "$MPIPE" plan models/tiny_mlp.mp --stages 2 --batch 64 \
    --out "$T/c.json"
x=$(took)
[ -n "$x" ] && python3 -c "import sys; assert float(sys.argv[1]) >= 1.15" "$x" &&
    grep -q "measured again (slower since a check 10 minutes ago)$" "$T/err" &&
    case "$(src "$T/c.json")" in *"($n timed now, 0 from the cache)"*) true ;; *) false ;; esac &&
    [ "$(mark get)" = none ] &&
    ok "a machine still slower than its cache minutes on says so (${x}x) and is measured again" ||
    bad "slower, again: ${x:-no probe}; $(src "$T/c.json"); mark $(mark get)"
expect_exit 0 "the machine fast again" probed plan_tiny
x=$(took)
[ -n "$x" ] && python3 -c "import sys; assert float(sys.argv[1]) <= round(1 / 1.15, 2)" "$x" &&
    case "$(src "$T/c.json")" in *"($n timed now, 0 from the cache)"*) true ;; *) false ;; esac &&
    ok "a machine faster than its cache says so (${x}x) and is measured again" ||
    bad "faster: ${x:-no probe}; $(src "$T/c.json")"
# A check that finds the cache standing clears a mark (the slowdown passed); one that finds the
# machine slower (a slow moment here) keeps it, one that measures again drops it with the rates.
mark 10
expect_exit 0 "a plan that checks a marked cache" probed plan_tiny
case "$(probed_line)" in
*"the cached rates stand"*)
    [ "$(mark get)" = none ] && ok "a cache found standing loses its mark" || bad "mark kept: $(mark get)" ;;
*"the cached rates are kept for now"*)
    [ "$(mark get)" != none ] && ok "a cache found slower again keeps its mark (a slow moment)" ||
        bad "mark lost while kept" ;;
*"measured again"*)
    [ "$(mark get)" = none ] && ok "a cache measured again has no mark (a slow moment)" ||
        bad "mark kept: $(mark get)" ;;
*) bad "no check of the marked cache said: $(grep -a 'mpipe plan' "$T/err")" ;;
esac
echo '{"format": "mpipe machine rates 5", "gemm": [' >"$cache"
expect_exit 0 "plan with a corrupt cache" plan_tiny
grep -q "ignoring the rates cache.*corrupt" "$T/err" && ok "a corrupt cache is named in a warning" \
    || bad "no warning for a corrupt cache"
[ "$(cached "$cache")" = "$n" ] && ok "the corrupt cache is rewritten" || bad "not rewritten"
python3 -c "
import json, sys; d = json.load(open(sys.argv[1])); d['cpu'] = 'Imaginary CPU 9000'
json.dump(d, open(sys.argv[1], 'w'))" "$cache"
expect_exit 0 "plan with a foreign cache" plan_tiny
grep -q "ignoring the rates cache.*foreign" "$T/err" && ok "a foreign cache is named in a warning" \
    || bad "no warning for a foreign cache"
grep -q "Imaginary" "$cache" && bad "the foreign cache is not rewritten" \
    || ok "the foreign cache is rewritten with this machine's key"
# A cache of an older format (no timings of shapes with their weight kept packed) is measured again.
python3 -c "
import json, sys; d = json.load(open(sys.argv[1])); d['format'] = 'mpipe machine rates 4'
json.dump(d, open(sys.argv[1], 'w'))" "$cache"
expect_exit 0 "plan with a cache of an older format" plan_tiny
grep -q "ignoring the rates cache.*older way of measuring" "$T/err" &&
    grep -q '"format": "mpipe machine rates 5"' "$cache" \
    && ok "an older format's cache is named in a warning and rewritten" \
    || bad "older format: $(grep -a ignoring "$T/err")"
# The data-parallel reduction (a plan that may have replicas): measured once by an MPI job of the
# plan's own (`mpirun -np 2 mpipe bench reduce`), cached with the rates, reused; where mpirun cannot
# run, a warning and the link model, never a failure.
plan_dp() { "$MPIPE" plan models/tiny_mlp.mp --stages 1 --dp 2 --batch 64 --out "$T/c.json" "$@"; }
expect_exit 0 "plan --dp 2 measures the reduction between ranks" plan_dp
grep -q "measured the data-parallel reduction between 2 ranks" "$T/err" &&
    [ "$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['reduce']))" \
        "$cache")" -ge 5 ] && ok "the reduction's rows are cached with the rates" \
    || bad "no reduction rows: $(tail -2 "$T/err")"
case "$(src "$T/c.json")" in *"the reduction between 2 ranks (measured now)"*) ok "the plan says so" ;;
*) bad "cost_source: $(src "$T/c.json")" ;; esac
expect_exit 0 "a second --dp 2 plan" plan_dp
case "$(src "$T/c.json")" in *"the reduction between 2 ranks (from the cache)"*)
    ok "a second plan reuses the reduction's rows" ;; *) bad "reuse: $(src "$T/c.json")" ;;
esac
ar() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['allreduce_s'])" "$1"; }
measured_ar=$(ar "$T/c.json")
# --zero 1: each replica's optimizer step updates half the parameters, then all-gathers them (the
# second half of a reduction of the same bytes); the plan's step counts both.
cp "$T/c.json" "$T/z0.json"
expect_exit 0 "plan --dp 2 --zero 1" plan_dp --zero 1 --out "$T/z1.json"
python3 - "$T/z0.json" "$T/z1.json" <<'PY' && ok "--zero 1: half the optimizer, plus the all-gather" ||
import json, sys
z0, z1 = (json.load(open(f)) for f in sys.argv[1:])
want = z0["optim_step_s"] / 2 + z0["allreduce_s"] / 2
got = z1["optim_step_s"]
assert abs(got - want) <= 1e-9 + 1e-6 * want, (z0["optim_step_s"], got, want)
assert abs(z1["step_s"] - z0["step_s"] - (got - z0["optim_step_s"])) <= 1e-6 * z0["step_s"]
PY
    bad "--zero 1: optim_step_s $(grep -ho '"optim_step_s": [0-9.e-]*' "$T/z0.json" "$T/z1.json")"
mkdir -p "$T/nompi" && ln -sf "$(command -v python3)" "$T/nompi/python3"
expect_exit 0 "plan --dp 2 --recalibrate where mpirun is not on the PATH" \
    env PATH="$T/nompi" "$MPIPE" plan models/tiny_mlp.mp --stages 1 --dp 2 --batch 64 \
    --out "$T/c.json" --recalibrate
grep -q "could not measure the data-parallel reduction between ranks" "$T/err" &&
    case "$(src "$T/c.json")" in *"the reduction from the link model"*) true ;; *) false ;; esac &&
    ok "without mpirun: a warning, and the link model prices the reduction" \
    || bad "no mpirun: $(tail -1 "$T/err"); $(src "$T/c.json")"
# Which is dearer is the machine's: on an EPYC Zen4 VM the measured reduction of tiny_mlp's arena
# cost more than the link model's, on an EPYC Zen5 VM (2026-12-07) 19.8 us against 21.6.
python3 -c "import sys; a, b = map(float, sys.argv[1:]); assert a != b and a > 0 and b > 0, (a, b)" \
    "$measured_ar" "$(ar "$T/c.json")" &&
    ok "the measured reduction ($measured_ar s) prices it, not the link model's" ||
    bad "measured $measured_ar s, link model $(ar "$T/c.json") s"
# The links between ranks on this machine's own topology: each level the ranks span measured once
# (`mpirun -np 2 mpipe bench p2p` on two of the cores the plan would use), cached, reused; a level
# that cannot be measured keeps its default, with a warning; a topology file is not this machine.
lat() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['link_latency_s'][1])" "$1"; }
plan_p2() { "$MPIPE" plan models/tiny_mlp.mp --stages 2 --batch 64 --out "$T/c.json" "$@"; }
expect_exit 0 "plan --stages 2 --recalibrate measures the links" plan_p2 --recalibrate
level=$(python3 -c "import json,sys; print([l['relation'] for l in json.load(open(sys.argv[1]))
    .get('links', [])])" "$cache")
grep -q "measured the links between ranks" "$T/err" && [ "$level" != "[]" ] &&
    case "$(src "$T/c.json")" in *"links measured now ("*) true ;; *) false ;; esac &&
    ok "the links are measured, cached ($level) and named in cost_source" ||
    bad "links: $level; $(src "$T/c.json"); $(grep -a links "$T/err")"
[ "$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['gemm']))" "$cache")" -gt 0 ] \
    && ok "measuring the links again keeps the rest of the rates file" || bad "the GEMM rows were lost"
measured_lat=$(lat "$T/c.json")
expect_exit 0 "a second --stages 2 plan" plan_p2
case "$(src "$T/c.json")" in *"links from the cache ("*) ok "a second plan reuses the links" ;;
*) bad "links reuse: $(src "$T/c.json")" ;; esac
[ "$(lat "$T/c.json")" = "$measured_lat" ] && ok "the cached link prices the boundary alike" ||
    bad "cached latency $(lat "$T/c.json") against $measured_lat"
expect_exit 0 "plan --stages 2 --recalibrate where mpirun is not on the PATH" \
    env PATH="$T/nompi" "$MPIPE" plan models/tiny_mlp.mp --stages 2 --batch 64 --out "$T/c.json" \
    --recalibrate
grep -q "warning: could not measure the .* link" "$T/err" &&
    case "$(src "$T/c.json")" in *links*) false ;; *) true ;; esac &&
    python3 -c "import sys; assert float(sys.argv[1]) in (4e-07, 6e-07, 8e-07, 1.5e-06)" \
        "$(lat "$T/c.json")" &&
    ok "without mpirun: a warning, and the documented default prices the link" ||
    bad "no mpirun: $(grep -a link "$T/err"); $(src "$T/c.json"); $(lat "$T/c.json")"
expect_exit 0 "plan --stages 2 of a topology file" plan_p2 --recalibrate \
    --topology tests/data/topo_everything.xml
case "$(src "$T/c.json")" in *links*) bad "a topology file's links were measured here" ;;
*) ok "a topology file's links are not measured on this machine" ;; esac
# A run of a plan's own layout sets its step beside the plan's (stderr, rank 0); another M, not.
expect_exit 0 "plan tiny_mlp on one rank" "$MPIPE" plan models/tiny_mlp.mp --stages 1 --batch 64 \
    --micro-batches 2 --out "$T/one.json"
expect_exit 0 "train the plan" "$MPIPE" train models/tiny_mlp.mp --plan "$T/one.json" \
    --data synthetic:640 --epochs 1
grep -Eq '^plan: predicted step [0-9.]+ ms; this run [0-9.]+ ms \(prediction [-+][0-9.]+%\), median of the last 9 steps [0-9.]+ ms' "$T/err" &&
    ok "train sets its step beside the plan's" || bad "no plan-against-run line"
grep -Eq '^plan: busy a step \(passes and optimizer\), measured against predicted: rank 0 [0-9.]+ ms \([-+][0-9.]+%\)$' "$T/err" &&
    ok "...and its busy time beside the plan's" || bad "no busy line: $(grep -a busy "$T/err")"
# On 2 stages, each rank's busy time beside what `mpipe sim` gives that rank for the plan.
expect_exit 0 "plan tiny_mlp on 2 stages" "$MPIPE" plan models/tiny_mlp.mp --stages 2 --batch 64 \
    --micro-batches 2 --out "$T/two.json"
expect_exit 0 "train the 2-stage plan" mpirun -np 2 --oversubscribe "$MPIPE" train \
    models/tiny_mlp.mp --plan "$T/two.json" --data synthetic:640 --epochs 1
"$MPIPE" sim "$T/two.json" >"$T/sim.out" 2>&1
python3 - "$T/err" "$T/sim.out" <<'PY' && ok "...each rank's, against the simulator's busy for its rank" ||
import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("plan: busy a step")][0]
got = [(float(ms), float(pct)) for ms, pct in re.findall(r"rank \d+ ([0-9.]+) ms \(([-+][0-9.]+)%\)", line)]
sim = [float(l.split()[1]) for l in open(sys.argv[2]) if re.match(r"^[01] +[0-9.]+ ", l)]
assert len(got) == 2 and len(sim) == 2, (line, sim)
for (ms, pct), want in zip(got, sim):  # measured / (1 + error) is the prediction
    f = 1 + pct / 100  # each figure printed to 0.001 ms (the error to 0.1%)
    assert abs(ms / f - want) <= 0.0005 / f + 0.0005 + 0.001 * want, (ms, pct, want)
PY
    bad "busy against sim: $(grep -a 'busy a step' "$T/err"); $(head -5 "$T/sim.out" | tail -3)"
grep -q "reduction's own work" "$T/err" && bad "a reduction's work beside a run without replicas" ||
    ok "...and no reduction's work beside a run without replicas"
# With real replicas the reduction's own work runs between the backward's kernels: taken out of
# each rank's busy figure (the plan prices it apart) and said on a line of its own.
expect_exit 0 "plan tiny_mlp on 2 replicas" "$MPIPE" plan models/tiny_mlp.mp --stages 1 --dp 2 \
    --batch 64 --micro-batches 2 --out "$T/dp.json"
expect_exit 0 "train the 2-replica plan" mpirun -np 2 --oversubscribe "$MPIPE" train \
    models/tiny_mlp.mp --plan "$T/dp.json" --data synthetic:640 --epochs 1
grep -Eq "^plan: and the data-parallel reduction's own work between backward kernels, not in those figures \(priced apart\): rank 0 [0-9.]+ ms, rank 1 [0-9.]+ ms$" "$T/err" &&
    grep -Eq '^plan: busy a step \(passes and optimizer\), measured against predicted: rank 0 [0-9.]+ ms \([-+][0-9.]+%\), rank 1 [0-9.]+ ms \([-+][0-9.]+%\)$' "$T/err" &&
    ok "2 replicas: each rank's busy time, and the reduction's work on a line of its own" ||
    bad "2 replicas: $(grep -a '^plan' "$T/err")"
expect_exit 0 "train the plan at another M" "$MPIPE" train models/tiny_mlp.mp --plan "$T/one.json" \
    --data synthetic:640 --epochs 1 --micro-batches 4
grep -q '^plan:' "$T/err" && bad "a prediction set beside another M's run" ||
    ok "no prediction beside a run the plan did not price"
# --recompute given against the plan's choice prices another step (one more forward): no
# prediction beside it; given as the plan chose, the prediction stands.
expect_exit 0 "train the plan with --recompute all" "$MPIPE" train models/tiny_mlp.mp \
    --plan "$T/one.json" --data synthetic:640 --epochs 1 --recompute all
grep -q '^plan:' "$T/err" && bad "a prediction set beside a run that recomputes what the plan did not" ||
    ok "no prediction beside a run recomputing against the plan"
expect_exit 0 "train the plan with --recompute none" "$MPIPE" train models/tiny_mlp.mp \
    --plan "$T/one.json" --data synthetic:640 --epochs 1 --recompute none
grep -q '^plan: predicted step' "$T/err" && ok "  --recompute none as the plan chose: its prediction" ||
    bad "no prediction beside a run recomputing as planned"
# The optimizer and --zero a plan priced: recorded, taken by train, and a run with another
# optimizer gets no prediction beside it.
expect_exit 0 "plan with --optimizer sgd --zero 1" "$MPIPE" plan models/tiny_mlp.mp --stages 1 \
    --batch 64 --micro-batches 2 --optimizer sgd --zero 1 --out "$T/sgd.json"
python3 -c "import json,sys; p=json.load(open(sys.argv[1])); assert (p['optimizer'], p['zero']) == ('sgd', 1)" \
    "$T/sgd.json" && ok "the plan records the optimizer and --zero" || bad "plan: no optimizer/zero"
expect_exit 0 "train the sgd plan" "$MPIPE" train models/tiny_mlp.mp --plan "$T/sgd.json" \
    --data synthetic:640 --epochs 1
state_bytes() { sed -n 's/^rank 0: .*, optimizer \([0-9]*\), .*/\1/p' "$T/err"; }
sgd_state=$(state_bytes)
grep -q '^plan: predicted step' "$T/err" && ok "train sets its step beside the sgd plan's" ||
    bad "no plan line beside the sgd plan's run"
expect_exit 0 "train the sgd plan with --optimizer adam" "$MPIPE" train models/tiny_mlp.mp \
    --plan "$T/sgd.json" --data synthetic:640 --epochs 1 --optimizer adam
adam_state=$(state_bytes)
# Adam keeps two floats per parameter; SGD's arena keeps one slot all the same: half as much.
[ -n "$sgd_state" ] && [ $((2 * sgd_state)) = "$adam_state" ] &&
    ok "train takes the plan's optimizer ($sgd_state bytes of state), --optimizer overrides it ($adam_state)" ||
    bad "optimizer state: sgd plan '$sgd_state', with --optimizer adam '$adam_state'"
grep -q '^plan:' "$T/err" && bad "a prediction set beside a run with another optimizer" ||
    ok "  and that run's step is not set beside the plan's"
for kv in 'optimizer "sgdx"' 'zero 2' 'optimizer 3'; do
    python3 -c "import json,sys; p=json.load(open(sys.argv[1])); k,v=sys.argv[2].split(' ',1); p[k]=json.loads(v); json.dump(p,open(sys.argv[3],'w'))" \
        "$T/sgd.json" "$kv" "$T/bad.json"
    expect_exit 2 "a plan with $kv" "$MPIPE" train models/tiny_mlp.mp --plan "$T/bad.json" \
        --data synthetic:640 --epochs 1
    grep -q "bad.json: key '${kv%% *}'" "$T/err" && ok "  its message names the key" ||
        bad "  message: $(head -c 300 "$T/err")"
done
# A run of a plan priced from the rates cache (a second or more, 50 steps or more, as planned) is
# kept beside the rates with its ranks' pace (their busy time over the plan's); the next plans of
# that layout lean by the median of its last runs' step over price over pace (2 runs or more, each
# within 0.5-2x), and keep the price from the rates alone apart, which train sets the next run
# against (leans do not compound). --recalibrate keeps the runs: each is over its ranks' pace,
# priced from the same rates as its step, which new rates scale alike.
lean_plan() { "$MPIPE" plan models/tiny_mlp.mp --stages 1 --batch 64 --micro-batches 1 \
    --out "$T/lean.json" "$@"; }
jq_() { python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print($2)" "$1"; }
expect_exit 0 "plan tiny_mlp on one rank (M 1)" lean_plan
key=$(jq_ "$T/lean.json" "p.get('rates_key', '')")
cache="$T/calib/mpipe/rates-$key.json"
[ -n "$key" ] && [ -f "$cache" ] && [ "$(jq_ "$T/lean.json" "p['priced_step_s'] == p['step_s'] and 'lean' not in p")" = True ] &&
    ok "the plan names its rates cache and its price; no runs yet, no lean" ||
    bad "rates_key '$key', $(jq_ "$T/lean.json" "(p.get('priced_step_s'), p['step_s'], p.get('lean'))")"
steps=$(jq_ "$T/lean.json" "int(2.0 / p['step_s']) + 50") # 2 s at its price
kept=0
for i in 1 2; do
    expect_exit 0 "train the plan for 2 s ($i)" "$MPIPE" train models/tiny_mlp.mp \
        --plan "$T/lean.json" --data synthetic:640 --epochs 100000 --max-steps "$steps"
    grep -Eq "^plan: this run's mean step, [0-9.]+x the price from the rates with its ranks at [0-9.]+x their price \(a lean of [0-9.]+x\), is kept in $cache: the next plans of this layout lean by its last runs$" "$T/err" &&
        kept=$((kept + 1))
done
n_runs() { jq_ "$cache" "len(p.get('runs', []))"; }
[ "$kept" = 2 ] && [ "$(n_runs)" = 2 ] && ok "each run is kept in the rates cache, and says so" ||
    bad "kept $kept, runs in the cache $(n_runs): $(grep -a '^plan' "$T/err")"
expect_exit 0 "train it 20 steps" "$MPIPE" train models/tiny_mlp.mp --plan "$T/lean.json" \
    --data synthetic:640 --epochs 1 --max-steps 20
expect_exit 0 "train it at another M" "$MPIPE" train models/tiny_mlp.mp --plan "$T/lean.json" \
    --data synthetic:640 --epochs 100000 --max-steps "$steps" --micro-batches 2
[ "$(n_runs)" = 2 ] && ok "  a short run and a run the plan did not price are not kept" ||
    bad "runs in the cache: $(n_runs)"
price=$(jq_ "$T/lean.json" "p['priced_step_s']")
expect_exit 0 "plan it again" lean_plan
# What the plan must lean by, from the cache's runs (mp_cost_lean's rule): every run leaning
# 0.5-2x counted, or none if fewer than 2 do (a disturbed run; then no lean line).
want=$(python3 - "$cache" <<'PY'
import json, statistics, sys
q = [r["measured_s"] / (r["priced_s"] * r["pace"]) for r in json.load(open(sys.argv[1]))["runs"]]
q = [x for x in q if 0.5 <= x <= 2.0]
print("%.6f %d" % (statistics.median(q), len(q)) if len(q) >= 2 else "1.000000 0")
PY
)
got=$(jq_ "$T/lean.json" "'%.6f %d %r' % (p.get('lean', 1), p.get('lean_runs', 0), abs(p['step_s'] - p['priced_step_s'] * p.get('lean', 1)) <= 1e-9 * p['step_s'] and p['priced_step_s'] == $price)")
case "$want" in
*" 0") [ "$got" = "1.000000 0 True" ] && ! grep -q '^lean:' "$T/out" &&
    ok "  (a run leaned past 2x: no lean, as the rule says)" || bad "want no lean, got $got" ;;
*) [ "$got" = "$want True" ] &&
    grep -Eq "^lean: [0-9.]+x, the median of this layout's last 2 runs on this machine: their step over their price at their ranks' pace \(train --plan keeps each in the rates cache\); the rates alone predict [0-9.]+ ms$" "$T/out" &&
    ok "the next plan leans by its runs' median ($want), its price from the rates unchanged" ||
    bad "lean: want '$want True', got '$got'; $(grep -a '^lean' "$T/out")" ;;
esac
# Its run is kept against the price from the rates, not against the leaned step.
expect_exit 0 "train the leaned plan for 2 s" "$MPIPE" train models/tiny_mlp.mp \
    --plan "$T/lean.json" --data synthetic:640 --epochs 100000 --max-steps "$steps"
if grep -q "is kept in" "$T/err"; then
    jq_ "$cache" "p['runs'][-1]['priced_s'] == $price" | grep -qx True &&
        ok "  a run of a leaned plan is kept against the price from the rates" ||
        bad "last run's price: $(jq_ "$cache" "p['runs'][-1]") (plan's $price)"
fi
"$MPIPE" sim "$T/lean.json" >"$T/sim.out" 2>&1
case "$want" in *" 0") ;; *)
    grep -q "^# the plan's step also leans [0-9.]*x by this layout's last [0-9]* runs" "$T/sim.out" &&
        ok "  sim says its figures leave the lean out" || bad "sim: $(cat "$T/sim.out")" ;;
esac
runs_before=$(n_runs)
expect_exit 0 "plan --recalibrate" lean_plan --recalibrate
case "$want" in *" 0") has_lean=0 ;; *) grep -q '^lean:' "$T/out"; has_lean=$? ;; esac
[ "$(n_runs)" = "$runs_before" ] && [ "$runs_before" -ge 2 ] && [ "$has_lean" = 0 ] &&
    ok "--recalibrate keeps the runs, and the plan its lean" ||
    bad "after --recalibrate: $(n_runs) runs (before $runs_before); $(grep -a '^lean' "$T/out")"
# A run kept while a plan measures (here gpt.mp's new shapes, seconds) stays: the plan writes the
# cache with the runs the file holds then, under the cache's lock, not the ones it read at its
# start (the run was lost). The run is added as train --plan adds one, under the lock.
"$MPIPE" plan models/gpt.mp --stages 1 >/dev/null 2>"$T/gpt.err" &
plan_pid=$!
sleep 0.5
python3 - "$cache" <<'PY'
import fcntl, json, os, sys
with open(sys.argv[1] + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    p = json.load(open(sys.argv[1]))
    p["runs"].append(dict(p["runs"][-1], at=12345.0))
    json.dump(p, open(sys.argv[1] + ".new", "w"))
    os.replace(sys.argv[1] + ".new", sys.argv[1])
PY
if kill -0 "$plan_pid" 2>/dev/null; then
    wait "$plan_pid"
    grep -q "measured this machine's rates" "$T/gpt.err" &&
        [ "$(jq_ "$cache" "sum(r['at'] == 12345.0 for r in p['runs'])")" = 1 ] &&
        ok "a run kept while a plan measures is in the cache the plan wrote" ||
        bad "runs after the plan: $(jq_ "$cache" "[r['at'] for r in p['runs']]"); $(cat "$T/gpt.err")"
else
    wait "$plan_pid"
    echo "skip  gpt.mp's plan measured in under 0.5 s: the run was added after it wrote the cache"
fi
# A cache whose runs are malformed is corrupt as a whole, as for any other key.
python3 -c "import json,sys; p=json.load(open(sys.argv[1])); p['runs']=[{'model':'x'}]; json.dump(p,open(sys.argv[1],'w'))" "$cache"
expect_exit 0 "plan with a malformed run in the cache" lean_plan
grep -q "ignoring the rates cache $cache: a malformed runs entry (corrupt)" "$T/err" &&
    ok "  a malformed run: the cache is ignored with a warning and rewritten" ||
    bad "malformed run: $(grep -a warning "$T/err")"
rm -rf "$T/calib"
expect_exit 0 "plan --profile" "$MPIPE" plan models/mlp.mp --stages 2 --profile "$T/profile.json" \
    --out "$T/c.json"
[ ! -e "$T/calib" ] && ok "--profile overrides: nothing measured or cached" || bad "cache written"
export XDG_CACHE_HOME="$T/profile.json" # a file: no directory can be made under it
expect_exit 0 "plan with an unwritable cache" plan_tiny
grep -q "cannot write the rates cache" "$T/err" && ok "an unwritable cache is only a warning" \
    || bad "no warning for an unwritable cache"

done_claims
