#!/usr/bin/env bash
# One command for a short GPU slot (issue 24): `python -m bench.gpu` (bench/gpu.py says what it measures) with a hard
# stop a minute past its deadline, its output in OUT/gpu.log, its results in OUT/GPU_RESULTS.md (kept if cut off).
# Run from the repository root, mnist_lit importable (`pip install --no-deps -e .`), MNIST's four raw files in
# ./data/MNIST/raw (or $MNIST_LIT_DATA_DIR):
#
#     bash bench/gpu.sh OUT                                 # about 6 minutes on an H200
#     DEADLINE=190 bash bench/gpu.sh OUT                    # seconds
#     bash bench/gpu.sh OUT --accel cpu --epoch-steps 5     # tries it on a CPU
set -u
out=${1:?usage: bash bench/gpu.sh OUT [options of python -m bench.gpu]}
shift
deadline=${DEADLINE:-480}
mkdir -p "$out"
timeout -k 10 $((deadline + 60)) ${PYTHON:-python3} -m bench.gpu --out "$out" --deadline "$deadline" "$@" \
    >"$out/gpu.log" 2>&1
status=$?
grep -E "^== |Error" "$out/gpu.log"
cat "$out/GPU_RESULTS.md"
exit $status
