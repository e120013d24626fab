#!/usr/bin/env bash
# `python -m bench.gpu` (issue 24) with a hard stop a minute past its deadline ($DEADLINE s, default 480); its output
# in OUT/gpu.log, its results in OUT/GPU_RESULTS.md (kept if cut off). From the repository root: `bash bench/gpu.sh
# OUT` (about 6 minutes on an H200), or `bash bench/gpu.sh OUT --accel cpu --epoch-steps 5` to try it on a CPU.
set -u
out=${1:?usage: bash bench/gpu.sh OUT [options of python -m bench.gpu]} deadline=${DEADLINE:-480}
mkdir -p "$out"
timeout -k 10 $((deadline + 60)) ${PYTHON:-python3} -m bench.gpu --out "$out" --deadline "$deadline" "${@:2}" \
    >"$out/gpu.log" 2>&1
status=$?
grep -E "^== |Error" "$out/gpu.log"
cat "$out/GPU_RESULTS.md"
exit $status
