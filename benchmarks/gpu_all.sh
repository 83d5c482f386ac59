#!/usr/bin/env bash
# Every GPU benchmark in one device session (the device tool lends one machine for a few minutes).
# Usage on the GPU machine, from the repo root: DATA=path/to/Amazon OUT=results/ bash benchmarks/gpu_all.sh
set -u
OUT=${OUT:-gpu_results}
DATA=${DATA:-$PWD/.device_data/Amazon}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'lightning', lightning.__version__)" | tee -a "$OUT/gpu.txt"
timeout 210 python3 benchmarks/gpu_decoding.py --data_dir "$DATA" 2>&1 | grep -v -i warn | tee "$OUT/decoding.txt"
timeout 180 python3 benchmarks/gpu_sft.py 2>&1 | grep -v -i warn | tee "$OUT/sft.txt"
timeout 150 python3 benchmarks/grpo.py --model 1.5b --steps 3 --data_dir "$DATA" 2>&1 | grep -v -i warn | tee "$OUT/grpo.txt"
