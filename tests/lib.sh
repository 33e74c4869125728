# Shared helpers for the shell tests: claims with a verdict each, and the closing count line.
# Source it; $MPIPE is the binary under test.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export BLIS_NUM_THREADS=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export XDG_CACHE_HOME="$TMP/cache" # `mpipe plan` caches this machine's rates: not in the user's
n_pass=0
n_fail=0
claim() { # claim "what is promised" <command that exits 0 when it holds>
    local what=$1
    shift
    if "$@"; then
        echo "ok    $what"
        n_pass=$((n_pass + 1))
    else
        echo "FAIL  $what"
        n_fail=$((n_fail + 1))
    fi
}
exits_with() { # exits_with CODE PATTERN cmd...: the exit code, and PATTERN on stderr
    local code=$1 pat=$2
    shift 2
    "$@" >/dev/null 2>"$TMP/stderr"
    local rc=$?
    [ $rc -eq "$code" ] && grep -q -- "$pat" "$TMP/stderr" ||
        { echo "  got exit $rc: $(head -3 "$TMP/stderr")"; return 1; }
}
refused() { exits_with 2 "$@"; } # refused PATTERN cmd...: bad usage or input, exit 2
result_field() { tr '\r' '\n' | grep '^RESULT' | tail -1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }
finish() {
    echo "$n_pass passed, $n_fail failed"
    [ "$n_fail" -eq 0 ]
}
