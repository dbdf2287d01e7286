#!/usr/bin/env bash
# GPU measurements for the libtorch path, run on the lent GPU machine (H100/H200, CUDA 13
# driver, PyTorch 2.11 in python3, no Rust toolchain, no network). Builds nothing there.
#
# Carried with the working tree (64 MiB at most), prepared on the build machine:
#   gpu/bdense.zst   the bdense binary built for torch 2.11 and compressed:
#                    [patch.crates-io] copies of burn-tch and burn-signal 0.22.1 whose tch /
#                    torch-sys are raised to 0.24 (libtorch 2.11); LIBTORCH=<unpacked torch
#                    2.11.0 wheel>/torch, RUSTFLAGS="-C link-arg=-Wl,--allow-shlib-undefined",
#                    cargo build --workspace --features bdense-pipeline/tch; strip; zstd -19
#                    (see ../shared/docs/LIBTORCH.md, route B1: 26 MB)
#   gpu/store/fm13   a Fashion-MNIST GMM store that fits the carry:
#                    bdense generate gpu/store/fm13 --dataset fashion-mnist --teacher gmm \
#                      --grid 13 --count 1024 --dtype f16
#
# Measures (a) student training throughput for sfd and bdense K = 4 at N = 4 on batches of
# 128, streamed from the store and from memory, (b) the same student step in PyTorch eager
# (pipeline/torch/student_step.py), (c) the share of step time spent waiting for batches.
# Writes everything under $OUT (or ./gpu-results).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" || true
ldd --version | head -1 >> "$out/gpu.txt"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' >> "$out/gpu.txt"
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
bin=/tmp/bdense
if command -v zstd >/dev/null; then zstd -d -f gpu/bdense.zst -o "$bin"; else
  python3 -c 'import zstandard,sys; zstandard.ZstdDecompressor().copy_stream(open("gpu/bdense.zst","rb"), open(sys.argv[1],"wb"))' "$bin"
fi
chmod +x "$bin"
"$bin" --version >> "$out/gpu.txt"

# (a) + (c): bdense on the GPU through burn-tch, streamed against in-memory batches.
"$bin" bench train gpu/store/fm13 --n 4 --k 4 --batch 128 --steps 40 --base 16 --device cuda:0 | tee "$out/bench-train-cuda.txt"
# (b): the PyTorch eager peer of the same step, same shapes.
for k in 1 4; do
  python3 pipeline/torch/student_step.py --k "$k" --n 4 --batch 128 --steps 40 --device cuda | tee -a "$out/pytorch-eager.txt"
done
echo "gpu bench done: results in $out"
