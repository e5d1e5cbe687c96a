#!/bin/bash
# lockstep explore as a Slurm job array: SHARDS array tasks each run one shard of one seed range,
# writing its `--json` result and its failing seeds to a shared directory; a job that depends on
# the whole array merges them. README "Exploring on many machines" explains --shard, --merge and
# the result format. tests/explore_shards.rs runs the shard and merge steps locally.
#
#   bash explore-slurm.sh               # on a login node: submits the array and the merge
#   cat "$RESULTS/merge.log"            # afterwards: the summary table; summary.json beside it
#
# Settings, overridable from the environment. RESULTS must be on a file system every node sees.
SHARDS=${SHARDS:-8}
SEEDS=${SEEDS:-100000}
FROM=${FROM:-0}
DURATION=${DURATION:-10s}
set -u

if [ "${1:-}" = merge ]; then
    # Runs after every array task, failed ones included (afterany): a missing shard then shows
    # as `incomplete` and exit 2, instead of the merge never running.
    lockstep explore --merge "$RESULTS"/shard-*.json --json > "$RESULTS/summary.json"
    lockstep explore --merge "$RESULTS"/shard-*.json
    exit
fi

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    export SHARDS SEEDS FROM DURATION
    export RESULTS=${RESULTS:-$PWD/lockstep-explore-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$RESULTS/failures" || exit 2
    array=$(sbatch --parsable --job-name=lockstep-explore --array="0-$((SHARDS - 1))" \
        --cpus-per-task=8 --time=04:00:00 --output="$RESULTS/shard-%a.log" "$0") || exit 2
    sbatch --parsable --job-name=lockstep-explore-merge --dependency="afterany:$array" \
        --output="$RESULTS/merge.log" "$0" merge || exit 2
    echo "results in $RESULTS"
    exit
fi

# One array task. lockstep's K counts from 0; counting from the array's first index keeps that
# true however the range is written (--array=1-8 gives K 0 to 7). The range must have step 1.
k=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
lockstep explore --seeds "$SEEDS" --from "$FROM" --duration "$DURATION" \
    --shard "$k/$SHARDS" --jobs "${SLURM_CPUS_PER_TASK:-1}" --json \
    --out "$RESULTS/failures/shard-$k" > "$RESULTS/shard-$k.json.partial"
code=$?
# 1: seeds failed, and the result records them; only bad input (2) or a crash fails the task.
[ "$code" -le 1 ] || exit "$code"
# Stopped part-way (scancel, time limit): fail the task and leave no result, so the merge says
# which seeds are missing.
grep -q '"interrupted": false' "$RESULTS/shard-$k.json.partial" || exit 3
mv "$RESULTS/shard-$k.json.partial" "$RESULTS/shard-$k.json"
