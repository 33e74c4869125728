#!/usr/bin/env bash
# `mpipe bench p2p` measures what a plain MPI ping-pong measures: at 64 KiB its latency agrees with
# osu_latency's loop (compiled here) within 10%: the best of 5 interleaved runs of each, else
# their medians. A comparison of medians means nothing when identical runs of the same program
# already differ by more than that (other jobs on the cores): then, unless the best runs agree,
# the test says how much they differed and exits 77, which CTest reports as skipped
# (SKIP_RETURN_CODE), never as a pass. On cores shared with a busy
# process a ping-pong's round trip becomes the scheduler's time slice, and the ten runs took more
# than CTest's 600 s (a soak with one busy loop beside it timed the test out): so a first pair of
# runs slower than LOADED_S, any run past its timeout, or runs past 150 s in all are the same
# verdict, said at once (at most about 400 s in all).
# Usage: test_bench_p2p.sh path/to/mpipe (run from the repo root).
MPIPE=$1
. "$(dirname "$0")/lib.sh"
MPIRUN="mpirun -np 2 --oversubscribe"
cat >"$TMP/pp.c" <<'C'
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv)
{
    int rank, n = 65536, iters = 2000;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    char *buf = calloc(n, 1);
    double t0 = 0;
    for (int i = 0; i < iters + 200; i++) {
        if (i == 200) t0 = MPI_Wtime();
        if (rank == 0) {
            MPI_Send(buf, n, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
            MPI_Recv(buf, n, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(buf, n, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, n, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
        }
    }
    if (rank == 0) printf("%.4f\n", (MPI_Wtime() - t0) / iters / 2 * 1e6);
    MPI_Finalize();
    return 0;
}
C
mpicc -O2 -o "$TMP/pp" "$TMP/pp.c" || { echo "FAIL  mpicc"; exit 1; }
LOADED_S=30 # a quiet 2-core machine runs a pair in about 4 s
loaded() { # loaded WHY: the cores are shared, a latency comparison cannot be made: skip
    echo "skip  p2p vs plain ping-pong: $1: the cores are shared, a 10% comparison cannot be made"
    exit 77
}
plain=() ours=()
t0=$(date +%s)
for i in 1 2 3 4 5; do # interleaved, so a passing load disturbs both alike
    start=$(date +%s)
    [ $((start - t0)) -le 150 ] || loaded "the runs so far took $((start - t0)) s"
    plain+=("$(timeout 120 $MPIRUN "$TMP/pp" 2>/dev/null)") || loaded "a plain ping-pong took over 120 s"
    timeout 120 $MPIRUN "$MPIPE" bench p2p --max-bytes 65536 --json >"$TMP/p$i.json" 2>/dev/null ||
        [ $? -ne 124 ] || loaded "mpipe bench p2p took over 120 s"
    ours+=("$(python3 -c "import json; print(json.load(open('$TMP/p$i.json'))['rows'][-1]['latency_us'])" 2>/dev/null)")
    took=$(($(date +%s) - start))
    [ "$i" -gt 1 ] || [ "$took" -le "$LOADED_S" ] || loaded "the first pair of runs took $took s"
done
python3 - "${plain[@]}" "${ours[@]}" <<'PY'
import statistics, sys
try:
    v = [float(x) for x in sys.argv[1:]]
    assert len(v) == 10
except (ValueError, AssertionError):
    print("FAIL  a run gave no figure:", sys.argv[1:])
    sys.exit(1)
plain, ours = v[:5], v[5:]
mp, mo = statistics.median(plain), statistics.median(ours)
bp, bo = min(plain), min(ours)
spread = max((max(x) - min(x)) / statistics.median(x) for x in (plain, ours))
print(f"  64 KiB latency: plain ping-pong {mp:.2f} us {plain}, mpipe bench p2p {mo:.2f} us {ours}")
# On some VMs each run falls into one of a few speeds (seen: about 8, 13 and 36 us, run by run,
# whatever the binding), so medians of 5 differ by more than 10% while the programs agree. The
# best runs of each then say it: they agree within 10% only if mpipe measures what a plain
# ping-pong measures on the same fast state of the machine.
if abs(bo - bp) <= 0.10 * bp:
    print(f"ok    p2p latency agrees with a plain MPI ping-pong within 10% on the best runs "
          f"({bo:.2f} against {bp:.2f} us, {bo / bp - 1:+.1%}; medians {mo / mp - 1:+.1%})")
    sys.exit(0)
if spread > 0.10:
    print(f"skip  p2p vs plain ping-pong: identical runs differed by {spread:.0%} (> 10%): "
          "the cores are shared, a 10% comparison cannot be made")
    sys.exit(77)
ok = abs(mo - mp) <= 0.10 * mp
print(("ok    " if ok else "FAIL  ") + f"p2p latency agrees with a plain MPI ping-pong within 10% "
      f"({mo / mp - 1:+.1%}; runs agree within {spread:.0%})")
sys.exit(0 if ok else 1)
PY
