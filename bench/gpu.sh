#!/usr/bin/env bash
# The GPU checks (bench/GPU.md): the `best` recipe for several seeds side by side on one GPU, and every command of
# the README on the GPU path once — fit/test with --trainer.accelerator gpu, predict-images and serve with
# --device cuda, export of a GPU-trained checkpoint. Run from the repository root, MNIST in ./data:
#
#     bash bench/gpu.sh OUT                             # results and logs in OUT (results.tgz, best-SEED.tgz)
#     RUNS="0 1 2 0:10" DEADLINE=500 bash bench/gpu.sh OUT  # seeds 0, 1, 2 of the recipe; seed 0 for 10 epochs
#
# ACCEL=cpu DEVICE=cpu RUNS=0:1 FIT_ARGS="--trainer.limit_train_batches 20" tries the script on a CPU.
set -u
out=${1:?usage: bash bench/gpu.sh OUT}
runs=${RUNS:-0 1 2}
accel=${ACCEL:-gpu}
device=${DEVICE:-cuda}
deadline=${DEADLINE:-500}  # seconds: then whatever finished is packed and the rest stopped
checks=${CHECKS:-1}        # 0: the best runs only
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 MNIST_LIT_DATA_DIR=$PWD/data
py=${PYTHON:-python3}
start=$SECONDS
mkdir -p "$out"
exec > >(tee "$work/gpu.log") 2>&1
step() { echo "== [$((SECONDS - start)) s] $*"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$py -c "import torch, lightning, torchvision, torchmetrics as m; print('torch', torch.__version__, 'lightning',
lightning.__version__, 'torchvision', torchvision.__version__, 'torchmetrics', m.__version__, 'cuda',
torch.cuda.is_available() and torch.cuda.get_device_name(0))"

step "best: runs $runs (seed[:epochs]) side by side on one device"
for run in $runs; do
    seed=${run%%:*} epochs=${run#*:}
    [ "$epochs" = "$run" ] && epochs=""
    OMP_NUM_THREADS=1 $py bench/best.py --seed "$seed" ${epochs:+--epochs $epochs} --out "$work/BEST-${run/:/-}.md" \
        --keep "$work/best-${run/:/-}" --note "bench/gpu.sh: runs $runs side by side" >"$work/best-${run/:/-}.log" 2>&1 &
done

if [ "$checks" = 1 ]; then
step "fit cnn3block --trainer.accelerator $accel (the README's GPU command)"
mkdir -p "$work/cnn" && cd "$work/cnn" || exit 1
$py -m mnist_lit.cli fit --model cnn3block --trainer.accelerator "$accel" --trainer.enable_progress_bar false \
    ${FIT_ARGS:-} >fit.log 2>&1
echo "exit $?"; grep -E "^(best checkpoint|test accuracy)|error" fit.log
ckpt=$(sed -n 's/^best checkpoint: //p' fit.log)

step "test --ckpt_path on $accel"
$py -m mnist_lit.cli test --model cnn3block --ckpt_path "$ckpt" --trainer.accelerator "$accel" \
    --trainer.enable_progress_bar false 2>&1 | grep -E "test/acc|error"

step "predict-images --device $device on 20 test digits as PNG files"
$py - <<'EOF'
from pathlib import Path
from PIL import Image
from torchvision.datasets import MNIST
test = MNIST(__import__("os").environ["MNIST_LIT_DATA_DIR"], train=False)
Path("digits").mkdir()
for i in range(20):
    Image.fromarray(255 - test.data[i].numpy()).save(f"digits/{i:02d}-label{int(test.targets[i])}.png")  # ink on paper
EOF
$py -m mnist_lit.cli predict-images --ckpt "$ckpt" --device "$device" --format csv digits/ >predictions.csv
echo "exit $?; $(($(wc -l <predictions.csv) - 1)) rows"; head -4 predictions.csv
$py -m mnist_lit.cli predict-images --ckpt "$ckpt" --device cuda:7 digits/ 2>&1 | tail -1

step "export a $accel-trained checkpoint (checked against it on the CPU)"
$py -m mnist_lit.cli export --ckpt "$ckpt" --format torchscript 2>&1 | tail -2

step "serve --device $device"
$py -m mnist_lit.cli serve --ckpt "$ckpt" --device "$device" --port 8765 --api-servers 2 >serve.log 2>&1 &
server=$!
for _ in $(seq 120); do grep -q "^ready" serve.log && break; sleep 0.5; done
grep "^ready" serve.log || tail -5 serve.log
$py - <<'EOF'
import base64, json, urllib.request
from pathlib import Path
for path in sorted(Path("digits").glob("*.png"))[:3]:
    body = json.dumps({"image": base64.b64encode(path.read_bytes()).decode()}).encode()
    request = urllib.request.Request("http://127.0.0.1:8765/predict", body, {"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(request, timeout=30))
    print(path.name, "->", answer["digit"], answer["probability"])
EOF
kill -TERM $server; wait $server; echo "serve exit $?"
cd - >/dev/null || exit 1
fi

step "waiting for best (deadline ${deadline} s)"
while [ -n "$(jobs -rp)" ] && [ $((SECONDS - start)) -lt "$deadline" ]; do sleep 5; done
for run in ${runs//:/-}; do
    echo "-- $run"; grep -vE "^\|---|^$" "$work/BEST-$run.md" 2>/dev/null | tail -1 || tail -3 "$work/best-$run.log"
done
[ -n "$(jobs -rp)" ] && { step "deadline: stopping $(jobs -rp | wc -w) run(s)"; kill $(jobs -rp)
                          pkill -f "mnist_lit.cli fit --model best"; sleep 5; }

step "packing"
cd "$work" || exit 1
for run in ${runs//:/-}; do  # each run's config, TensorBoard events, curves.png, checkpoints (last.ckpt: to resume)
    [ -d "best-$run" ] && tar czf "$out/best-$run.tgz" "best-$run" "best-$run.log" $(ls "BEST-$run.md" 2>/dev/null)
done
tar czf "$out/results.tgz" --exclude "*.ckpt" --exclude "*.pt" gpu.log $(ls -d cnn/*.log cnn/*.csv cnn/lightning_logs 2>/dev/null)
ls -la "$out"
