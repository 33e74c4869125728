# Shared helpers for the shell tests: claims with a verdict each, the closing count line, and
# (for the failure tests) signalling one rank of a running job.
# Source it; $MPIPE is the binary under test.
set -u
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export BLIS_NUM_THREADS=1
TMP=$(mktemp -d)
victims=() # ranks a failure test signalled: the EXIT trap releases and ends them
release_victims() { # never leave a stopped or running rank behind
    local p
    for p in "${victims[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
}
trap 'release_victims; rm -rf "$TMP"' EXIT
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
thrice() { # thrice cmd...: cmd holds 3 runs in a row (a race that eats a rank's line shows in some)
    for _ in 1 2 3; do "$@" || return 1; done
}
result_field() { tr '\r' '\n' | grep '^RESULT' | tail -1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# Failure tests: signal one rank of this test's own mpirun job (its ranks carry MPIPE_TEST_TAG,
# passed with `mpirun -x MPIPE_TEST_TAG`, so no other job's rank is ever touched) and time how the
# job ends. `same` compares weights with the uninterrupted run's, saved as $TMP/ref.st.
# ON_RANK (an ERE, followed by the rank's number) matches every way a wait line names the rank it
# waited on: "... from rank 1", "... to rank 1" and a send's "... to be taken by rank 1" (a claim
# that knew only the first two failed a CI run on the tied-E send, 2026-12-05).
ON_RANK='(from|to|taken by) rank'
tag_ranks() { # tag_ranks PREFIX: a tag unique to this test run, exported as MPIPE_TEST_TAG
    MPIPE_TEST_TAG="$1-$$-$RANDOM"
    export MPIPE_TEST_TAG
}
rank_pid() { # rank_pid RANK: the pid of this test's mpipe process of that rank
    local p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = mpipe ] || continue
        local env
        env=$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null)
        grep -qx "MPIPE_TEST_TAG=$MPIPE_TEST_TAG" <<<"$env" &&
            grep -qx "OMPI_COMM_WORLD_RANK=$1" <<<"$env" && { echo "${p#/proc/}"; return 0; }
    done
    return 1
}
wait_for_checkpoint() { # until DIR/latest exists (a run is under way and resumable), at most 60 s
    for _ in $(seq 3000); do [ -e "$1/latest" ] && return 0; sleep 0.02; done
    return 1
}
hit() { # hit SIGNAL RANK DIR: once DIR has a checkpoint, signal that rank; prints its pid
    # The rank is found first, while the job starts, so that the signal follows the checkpoint
    # closely. The job must still be running then: tiny models train 200 steps in a tenth of a
    # second, so the tests hold the victim after a later checkpoint (MPIPE_FAULT_INJECT=hold:STEP:
    # RANK). Without the hold, a run that ended before the signal failed 1 CI run (2026-12-05).
    local pid=
    for _ in $(seq 600); do pid=$(rank_pid "$2") && break; sleep 0.1; done
    [ -n "$pid" ] || return 1
    wait_for_checkpoint "$3" || return 1
    kill "-$1" "$pid" && echo "$pid"
}
interrupt() { # interrupt SIGNAL RANK DIR cmd...: run cmd (stdout $TMP/out, stderr $TMP/err) and
    # hit it; sets pid (the rank signalled, also in victims), rc (cmd's exit) and took (seconds
    # from the signal to the job's end). A stopped rank is continued and killed once cmd ended.
    local sig=$1 rank=$2 dir=$3 job t0
    shift 3
    "$@" >"$TMP/out" 2>"$TMP/err" &
    job=$!
    pid=$(hit "$sig" "$rank" "$dir") && victims+=("$pid")
    t0=$(date +%s.%N)
    wait $job
    rc=$?
    took=$(echo "$(date +%s.%N) - $t0" | bc)
    if [ "$sig" = STOP ] && [ -n "$pid" ]; then
        kill -CONT "$pid" 2>/dev/null
        kill -9 "$pid" 2>/dev/null
    fi
    return 0
}
claim_killed() { # claim_killed WHAT DEADLINE: after `interrupt 9 ...`, the job ended, and quickly
    claim "$1: the job exits non-zero (got $rc)" test "$rc" -ne 0
    claim "... within 2x --deadline (took ${took}s)" test "$(echo "$took < 2 * $2" | bc)" = 1
}
claim_stopped() { # claim_stopped WHAT DEADLINE [SLACK]: after `interrupt STOP ...`, the deadline
    # ended the job (exit 4) within 2x --deadline, plus SLACK seconds of start-up if given
    local slack=${3:-0} plus=
    [ "$slack" != 0 ] && plus=" + start-up"
    claim "$1: exit 4 (got $rc)" test "$rc" -eq 4
    claim "... through the deadline, within 2x --deadline$plus (took ${took}s)" \
        test "$(echo "$took < 2 * $2 + $slack" | bc)" = 1
}
same() { # same FILE: byte for byte the uninterrupted run's weights
    cmp -s "$TMP/ref.st" "$1" || { echo "  $1 differs from the uninterrupted run"; return 1; }
}
finish() {
    echo "$n_pass passed, $n_fail failed"
    [ "$n_fail" -eq 0 ]
}
