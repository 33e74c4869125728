# shellcheck shell=bash disable=SC2034 # MPIPE: the sourcing script's
# Shared by the shell tests of `mpipe plan` (test_cli_plan.sh: the CLI, the plan JSON, sim;
# test_cli_calib.sh: this machine's rates, measured and cached): a scratch directory with its own
# rates cache, claims counted, and a layer profile of models/mlp.mp. Source it with $1 the binary.
set -u
MPIPE=${1:?usage: $0 path/to/mpipe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export XDG_CACHE_HOME="$T/cache" # plan caches this machine's rates: never in the user's cache
# Plans compared with each other must price alike: no re-check of the cache between them (as
# tests/CMakeLists.txt sets for every test; the claims on the check unset it, `probed`).
export MPIPE_CALIB_DRIFT=0
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {
    fail=$((fail + 1))
    echo "FAIL $1"
    [ -f "$T/err" ] && sed 's/^/     /' "$T/err" | head -5
}

# expect_exit CODE NAME CMD...: runs CMD, checks its exit code; stderr kept in $T/err.
expect_exit() {
    local want=$1 name=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok "$name"; else bad "$name (exit $got, want $want)"; fi
}

# mlp_profile FILE: a layer profile of models/mlp.mp (every pass 1 ms, weight-grads 0.5).
mlp_profile() {
    {
        echo '{"rows": ['
        local kinds=(input flatten dense relu dense relu dense relu dense relu dense softmax_xent)
        local i sep
        for i in "${!kinds[@]}"; do
            sep=$([ "$i" -lt 11 ] && echo , || true)
            echo "{\"index\": $i, \"kind\": \"${kinds[$i]}\", \"forward_s\": 0.001,"
            echo " \"backward_input_s\": 0.001, \"backward_weight_s\": 0.0005}$sep"
        done
        echo ']}'
    } >"$1"
}

# done_claims: the count line, and the exit status of the whole.
done_claims() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}
