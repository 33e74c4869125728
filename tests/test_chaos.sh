#!/usr/bin/env bash
# tools/chaos in a few seconds: one kill -9 of a rank of a 3-rank tiny_mlp job under mpipe-run is
# diagnosed (the rank named, the survivors' `waited` lines) within 2x --deadline and resumes to
# the uninterrupted run's bytes, and the last line says so; a fault it does not know is exit 2.
# The 200-fault campaign is run by hand (docs/reliability.md). Usage: test_chaos.sh path/to/mpipe.
MPIPE=$(realpath "$1")
. "$(dirname "$0")/lib.sh"
CHAOS="$(dirname "$0")/../tools/chaos"
"$CHAOS" --runs 1 --seed 2 --faults kill --model models/tiny_mlp.mp --steps 20 --every 3 \
    --mpipe "$MPIPE" >"$TMP/out" 2>&1
rc=$?
claim "one kill -9: diagnosed, resumed byte-identical, exit 0 (got $rc)" bash -c "[ $rc -eq 0 ] &&
    tail -1 '$TMP/out' | grep -qx 'chaos runs=1 diagnosed=1 exact=1 hangs=0 false_alarms=0' ||
    { sed 's/^/  /' '$TMP/out'; exit 1; }"
claim "an unknown fault: exit 2" refused "faults are" "$CHAOS" --faults meteor --mpipe "$MPIPE"
finish
