#!/usr/bin/env bash
# Run several gpu_run.py phases at once on the GPU machine, side by side under NVIDIA MPS, in the background,
# so that they outlive the 10-minute command limit (benchmarks/GPU.md, "Side by side under MPS").
#
#   bash benchmarks/gpu_mps.sh start JOB...   # first call: wheels, data, MPS, then each JOB in the background
#   bash benchmarks/gpu_mps.sh watch SECONDS  # later calls: progress every 45 s, then a snapshot into $OUT
#
# A JOB is gpu_run.py's arguments in one string, without --out, e.g. "seeds --part 1/5 --sharing 6".
# Each job writes into $JOBS/jobN; both verbs end with a snapshot in $OUT: results.tgz (every JSON file and
# log so far) and report.tar.gz (a report job's notebooks, if any). Jobs run until they finish or the
# machine is given back, so keep the calls back to back: an idle machine goes back after 30 s.
set -u
cd "$(dirname "$0")/.."
JOBS=${JOBS:-/root/gpu-jobs}
OUT=${OUT:?run this through the device tool, which sets OUT}
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
START=$(date +%s)

snapshot() {
    (cd "$JOBS" && tar czf "$OUT/results.tgz" $(find . -name '*.json' -o -name '*.log' | sort))
    find "$JOBS" -name report.tar.gz -exec cp {} "$OUT/" \;
    ls -l "$OUT"
}

watch() {  # until $1 seconds after START, or until no job is left
    while [ $(($(date +%s) - START)) -lt "$1" ] && pgrep -f benchmarks/gpu_run.py > /dev/null; do
        echo "=== $(($(date +%s) - START)) s: $(pgrep -fc benchmarks/gpu_run.py) processes;" \
             "$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
        for log in "$JOBS"/*/job.log; do
            echo "  $(basename "$(dirname "$log")"): $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-160)"
        done
        sleep 45
    done
    snapshot
}

case "${1:-}" in
    start)
        shift
        [ $# -gt 0 ] || { echo "error: give at least one JOB, e.g. \"seeds --part 1/5\"" >&2; exit 2; }
        mkdir -p "$JOBS"
        [ -d /tmp/site ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/site .whl/*.whl || exit 1
        # Extract and decode once, before the jobs, or each would build the cache at the same time.
        PYTHONPATH=$PWD/benchmarks:$PYTHONPATH python3 -c "import gpu_run; from cifar_utils import load_dataset
load_dataset(str(gpu_run.data_root(None)))" || exit 1
        # MPS lets the jobs' kernels share the GPU instead of time-slicing it (without it, five processes
        # each ran about 4x slower than one alone). Without MPS the jobs still run, taking turns.
        if nvidia-cuda-mps-control -d; then echo "MPS daemon started"
        else echo "no MPS: jobs take turns on the GPU"; fi
        n=0
        for job in "$@"; do
            n=$((n + 1)); mkdir -p "$JOBS/job$n"
            echo "job$n: gpu_run.py $job" | tee "$JOBS/job$n/job.log"
            # setsid: a new session, so the job outlives this command; --deadline-minutes: no 8.5-minute stop
            setsid nohup python3 benchmarks/gpu_run.py $job --out "$JOBS/job$n" --deadline-minutes 60 \
                >> "$JOBS/job$n/job.log" 2>&1 < /dev/null &
        done
        sleep 20
        watch "${WATCH_SECONDS:-540}" ;;
    watch)
        watch "${2:?give the seconds to watch, e.g. 540}" ;;
    *)
        echo "usage: bash benchmarks/gpu_mps.sh start JOB... | watch SECONDS" >&2; exit 2 ;;
esac
