#!/usr/bin/env bash
# The first GPU run (issue 20, item 8), one command for a machine with one GPU (about 9 minutes at
# most on an H200; run it from anywhere):
#   1. nvidia-smi and the versions, into env.txt, with any package leafpipe needs that is missing;
#   2. bench/gpu_first_run.py at Llama-3.2-1B's shape: each GPU phase's peak memory against the
#      planner's estimate (gpu_first_run.log, gpu_first_run.json);
#   3. the default DAG with every GPU job given the GPU (distill, teacher_logits, generate, score,
#      validate_counterfactuals, attention) and `--resources gpu=1`, so they run one at a time, each
#      on the device leafpipe.execution.devices claims for it (dag.log; the run's logs, benchmarks, metrics and
#      report in dag-results.tar.gz). One seed instead of the default two, to fit the time: the
#      second replicate runs the same code paths.
# Everything goes to $OUT (default ./gpu-run). Each step has a time limit ($GPU_RUN_BENCH_S,
# $GPU_RUN_DAG_S seconds); one that fails or runs out does not stop the next.
# Python: $PYTHON (default python3) with CUDA torch; packages it lacks travel as wheels in .whl/
# (installed to /tmp/site first).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${OUT:-./gpu-run}" && cd "${OUT:-./gpu-run}" && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

# leafpipe.execution.devices finds a job's GPUs by CUDA_VISIBLE_DEVICES, else by the files /dev/nvidia<k>:
# without either, the DAG's GPU jobs would find none.
if [ -z "${CUDA_VISIBLE_DEVICES+x}" ] && ! compgen -G "/dev/nvidia[0-9]*" >/dev/null; then
  export CUDA_VISIBLE_DEVICES=0
  DEVICE_NOTE="(set here: no /dev/nvidia<k>)"
fi
{
  date -u
  nvidia-smi
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset} ${DEVICE_NOTE:-}; device files:" /dev/nvidia*
  $PY - <<'EOF'
import importlib.metadata as md
import torch
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "NONE VISIBLE"
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", device)
needed = ["transformers", "tokenizers", "snakemake", "pandas", "pyarrow", "matplotlib", "tqdm", "jsonschema",
          "pyyaml", "safetensors", "math-verify", "accelerate"]
for name in needed:
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
EOF
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

timeout -k 20 "${GPU_RUN_BENCH_S:-240}" $PY bench/gpu_first_run.py --device cuda --shape llama-3.2-1b \
  --out "$OUT/gpu_first_run.json" 2>&1 | tee "$OUT/gpu_first_run.log"
echo "bench/gpu_first_run.py: exit ${PIPESTATUS[0]}"

RESULTS=$(mktemp -d)/results
OVERRIDES=$(dirname "$RESULTS")/gpu.yaml
cat >"$OVERRIDES" <<EOF
results: $RESULTS
seeds: [0]
distill: {gpus: 1}
evaluation: {gpus: 1}
resources: {score: {gpu: 1}, attention: {gpu: 1}}
EOF
# A second --configfile is merged into the first, key by key.
timeout -s INT -k 30 "${GPU_RUN_DAG_S:-300}" $PY -m snakemake --workflow-profile profiles/local-gpu \
  --configfile config/config.yaml "$OVERRIDES" --resources gpu=1 --cores all --keep-going >"$OUT/dag.log" 2>&1
echo "default DAG: exit $? (log: dag.log)"
tail -n 15 "$OUT/dag.log"
(cd "$RESULTS" 2>/dev/null && find . -type f -size -4M \( -name '*.log' -o -name '*.tsv' -o -name '*.json' \
  -o -name '*.csv' -o -name '*.md' \) | tar -czf "$OUT/dag-results.tar.gz" -T -)
rm -rf "$(dirname "$RESULTS")"
ls -l "$OUT"
