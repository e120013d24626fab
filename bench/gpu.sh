#!/usr/bin/env bash
# `python -m bench.gpu` (issue 24) with a hard stop a minute past its deadline ($DEADLINE s, default 480, or 150 with
# --options); its output in OUT/gpu.log, its results in OUT/GPU_RESULTS.md (--options: OUT/GPU_OPTIONS.md), kept if
# cut off. From the repository root: `bash bench/gpu.sh OUT` (about 6 minutes on an H200), `bash bench/gpu.sh OUT
# --options` (the speed options, about 2.5 minutes), or `bash bench/gpu.sh OUT --accel cpu --epoch-steps 5` to try it
# on a CPU.
set -u
out=${1:?usage: bash bench/gpu.sh OUT [options of python -m bench.gpu]} results=GPU_RESULTS.md default=480
case " ${*:2} " in *" --options "*) results=GPU_OPTIONS.md default=150 ;; esac
deadline=${DEADLINE:-$default}
mkdir -p "$out"
timeout -k 10 $((deadline + 60)) ${PYTHON:-python3} -m bench.gpu --out "$out" --deadline "$deadline" "${@:2}" \
    >"$out/gpu.log" 2>&1
status=$?
grep -E "^== |Error" "$out/gpu.log"
cat "$out/$results"
exit $status
