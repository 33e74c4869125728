#!/usr/bin/env bash
# Claims about `mpipe plan --try K`: the best-predicted layouts are run on this machine, in turns,
# and the plan is the one that measured fastest, every layout run recorded in the plan ("tried");
# a layout whose runs fail is not picked, and when none runs the plan keeps the best-predicted;
# --try where it cannot run (another machine's topology, a hostfile, inside an MPI job) is a usage
# error. No claim compares timings with a bound: which layout is fastest is the machine's to say,
# and the claims hold whatever it says.
# Usage: test_plan_try.sh path/to/mpipe (run from the repository root).
# shellcheck source=tests/cli_plan_lib.sh
. "$(dirname "$0")/cli_plan_lib.sh"
export BLIS_NUM_THREADS=1

# Prices from a profile (every pass 1 ms, weight-gradients 0.5), the same on any machine: on 2
# ranks at batch 64 the four 2-stage schedules at M 1 are priced within 20% of the best (zbv),
# so a --try of 3 always has 3 layouts to run. The runs themselves are real: 6 steps each.
{
    echo '{"rows": ['
    kinds=(input flatten dense relu dense softmax_xent)
    for i in "${!kinds[@]}"; do
        echo "{\"index\": $i, \"kind\": \"${kinds[$i]}\", \"forward_s\": 0.001,"
        echo " \"backward_input_s\": 0.001, \"backward_weight_s\": 0.0005}$([ "$i" -lt 5 ] && echo ,)"
    done
    echo ']}'
} >"$T/profile.json"
plan_try() {
    "$MPIPE" plan models/tiny_mlp.mp --stages auto --ranks 2 --batch 64 --out "$T/p.json" \
        --profile "$T/profile.json" "$@"
}
# tried FIELD...: one line per tried layout, the fields named (of the plan's "tried").
tried() {
    python3 -c "import json,sys
p=json.load(open(sys.argv[1]))
for t in p.get('tried', []): print(*[t[k] for k in sys.argv[2:]])" "$T/p.json" "$@"
}
layout_of_plan() {
    python3 -c "import json,sys; p=json.load(open(sys.argv[1])); print(p['schedule'],p['P'],p['D'],p['M'])" "$T/p.json"
}

# Without --try the plan names the layouts it priced within 5% of its pick (`close:`), each as
# the plan of that layout alone prices it, and the --try that would run them all. With weight
# gradients at 0.1 ms the 2-stage schedules at M 1 are priced within a few per cent of zbv.
sed 's/"backward_weight_s": 0.0005/"backward_weight_s": 0.0001/' "$T/profile.json" >"$T/close.json"
for ranks in 2 4; do
expect_exit 0 "plan without --try, $ranks ranks" "$MPIPE" plan models/tiny_mlp.mp --stages auto \
    --ranks $ranks --batch 64 --out "$T/p.json" --profile "$T/close.json"
close=$(grep '^close: ' "$T/out")
python3 - "$MPIPE" "$T" "$close" <<'PY' && ok "  the close line names the layouts within 5% (the nearest 4), as each alone is priced, and the --try to run them" || bad "close: '$close'"
import json, re, subprocess, sys
mpipe, T, line = sys.argv[1:]
pick = json.load(open(T + "/p.json"))["step_s"]
named = re.findall(r"(\w+) P=(\d+)(?: V=(\d+))? D=(\d+) M=(\d+) \(([-+][0-9.]+)%\)", line)
more = re.search(r" and (\d+) more;", line)
assert named and len(named) <= 4 and (not more or len(named) == 4), line
assert line.endswith("--try %d runs them here and keeps the fastest"
                     % (len(named) + 1 + (int(more.group(1)) if more else 0))), line
for sched, P, V, D, M, pct in named:
    out = subprocess.run([mpipe, "plan", "models/tiny_mlp.mp", "--stages", P, "--dp", D,
                          "--micro-batches", M, "--schedule", sched, "--batch", "64", "--profile",
                          T + "/close.json", "--json"] + (["--chunks", V] if V else []),
                         capture_output=True, text=True, check=True)
    step = json.loads(out.stdout)["step_s"]
    assert pick <= step <= 1.05 * pick and abs(100 * (step / pick - 1) - float(pct)) < 0.06, (sched, step, pick, pct)
PY
done
grep -Eq '^close: .* and [0-9]+ more; .* --try ([6-9]|1[0-6]) runs' "$T/out" &&
    ok "  on 4 ranks, more than 4 close: the rest counted" || bad "4 ranks: $(grep '^close' "$T/out")"
expect_exit 0 "a plan of one layout, every choice given" "$MPIPE" plan models/tiny_mlp.mp \
    --stages 2 --micro-batches 2 --schedule zbv --batch 64 --profile "$T/close.json"
! grep -q '^close:' "$T/out" && ok "... names nothing close (it priced nothing else)" ||
    bad "close: $(grep '^close:' "$T/out")"

# Flags: a count from 1 to 16; this machine only.
for k in 0 17 two; do
    expect_exit 2 "--try $k is refused" plan_try --try "$k"
    grep -aq -- "--try" "$T/err" || bad "--try $k: the error does not name the flag"
done
expect_exit 2 "--try with another machine's topology is refused" \
    plan_try --try 2 --topology tests/data/topo_everything.xml
grep -aq "this machine" "$T/err" && ok "... saying it runs the layouts on this machine" ||
    bad "--topology: $(cat "$T/err")"
printf 'localhost slots=2\n' >"$T/hosts"
expect_exit 2 "--try with a hostfile is refused" plan_try --try 2 --hosts "$T/hosts"

# The trial: every layout of the shortlist ran 3 rounds; the plan is the one measured fastest,
# best-predicted first in "tried", none priced over 1.2x the best's step.
expect_exit 0 "plan --try 3" plan_try --try 3
n=$(tried M | wc -l)
[ "$n" -eq 3 ] && ok "3 layouts tried" || bad "tried $n layouts: $(tried schedule P D M)"
rounds=$(grep -ac "^mpipe plan: --try round [123] of 3: .* ran [0-9.]* samples/s" "$T/err")
[ "$rounds" -eq $((3 * n)) ] && ok "each ran 3 rounds ($rounds runs)" || bad "$rounds runs"
[ "$(tried picked | grep -c True)" -eq 1 ] && ok "one layout is picked" || bad "picked: $(tried picked)"
best=$(tried measured_samples_per_s | sort -g | tail -1)
read -r ps pm <<<"$(tried picked measured_samples_per_s | grep True)"
[ "$pm" = "$best" ] && python3 -c "import sys; sys.exit(not float(sys.argv[1]) > 0)" "$pm" &&
    ok "the picked layout measured fastest ($pm samples/s)" || bad "picked $pm, fastest $best"
[ "$(tried schedule P D M picked | grep True | cut -d' ' -f1-4)" = "$(layout_of_plan)" ] &&
    ok "the plan is the picked layout ($(layout_of_plan))" || bad "plan $(layout_of_plan)"
python3 -c "import json,sys
t=json.load(open(sys.argv[1]))['tried']
s=[x['predicted_samples_per_s'] for x in t]
sys.exit(not (s[0] == max(s) and min(s) >= s[0] / 1.2 - 1e-6))" "$T/p.json" &&
    ok "best-predicted first, every one within 1.2x of its step" ||
    bad "predicted: $(tried predicted_samples_per_s | paste -sd' ')"
[ "$(grep -c "  picked$" "$T/out")" -eq 1 ] && grep -q "^tried on this machine" "$T/out" &&
    ok "the table lists the layouts tried, one picked" || bad "table: $(cat "$T/out")"
! grep -q '^close:' "$T/out" && ok "... and no close line: the trial ran them" ||
    bad "close after --try: $(grep '^close:' "$T/out")"
expect_exit 2 "--try inside an MPI job is refused" env OMPI_COMM_WORLD_SIZE=2 PMIX_RANK=0 \
    "$MPIPE" plan models/tiny_mlp.mp --stages auto --ranks 2 --batch 64 --try 2 \
    --profile "$T/profile.json"
grep -aq "inside an MPI job" "$T/err" && ok "... saying why" || bad "MPI job: $(cat "$T/err")"
expect_exit 0 "mpirun runs the plan --try made" mpirun -np 2 --map-by core --bind-to core \
    "$MPIPE" train models/tiny_mlp.mp --plan "$T/p.json" --data synthetic:512 --max-steps 3

# A layout whose runs fail (a stand-in mpirun fails the best-predicted's) is not picked: another
# one, which ran, is the plan, and the lines say why the first did not run.
real=$(command -v mpirun)
mkdir -p "$T/bin"
cat >"$T/bin/mpirun" <<EOF
#!/usr/bin/env bash
case "\$*" in *layout-0.json*|*"\$FAIL_ALL"*)
    echo "mpipe train: rank 0: injected failure of this layout's run" >&2; exit 1 ;; esac
exec "$real" "\$@"
EOF
chmod +x "$T/bin/mpirun"
expect_exit 0 "plan --try 2, the best-predicted layout's runs failing" \
    env PATH="$T/bin:$PATH" FAIL_ALL=never-in-a-command "$MPIPE" plan models/tiny_mlp.mp \
    --stages auto --ranks 2 --batch 64 --out "$T/p.json" --profile "$T/profile.json" --try 2
first=$(tried measured_samples_per_s picked | head -1)
[ "$first" = "0.0 False" ] && [ "$(tried picked | grep -c True)" -eq 1 ] &&
    ok "the layout that did not run is recorded with 0 and not picked" || bad "tried: $(tried M measured_samples_per_s picked)"
grep -aq "did not run: mpipe train: rank 0: injected failure" "$T/err" &&
    grep -aq "measured fastest" "$T/err" && ok "... and the lines say why and what was picked" ||
    bad "lines: $(grep -a 'try' "$T/err")"
expect_exit 0 "plan --try 2, every run failing" env PATH="$T/bin:$PATH" FAIL_ALL=train \
    "$MPIPE" plan models/tiny_mlp.mp --stages auto --ranks 2 --batch 64 --out "$T/p.json" \
    --profile "$T/profile.json" --try 2
[ "$(tried measured_samples_per_s picked | head -1)" = "0.0 True" ] &&
    grep -aq "no layout ran (above): the plan keeps the best-predicted" "$T/err" &&
    ok "none ran: the plan is the best-predicted, saying so" || bad "none ran: $(tried M measured_samples_per_s picked)"
[ "$(grep -ac 'did not run' "$T/err")" -eq "$(tried M | wc -l)" ] &&
    ok "... after one round (every layout failed its first run)" || bad "rounds: $(grep -ac 'did not run' "$T/err")"
done_claims
