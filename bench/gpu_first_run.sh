#!/usr/bin/env bash
# The first GPU run (issue 18, item 6; issue 20, item 8), one command for a machine with one GPU,
# at most $GPU_RUN_TOTAL_S seconds (default 530, under 9 minutes; run it from anywhere):
#   1. nvidia-smi and the versions, into env.txt, with any package leafpipe needs that is missing;
#   2. bench/score.py on random-init Llama-3.1-8B and Llama-3.2-1B shapes in bf16: leafpipe's
#      input-gradient scoring against the one-sample reference, tokens/s, TFLOP/s and its share of
#      the GPU's bf16 dense peak (read from the device name, bench/gpu_targets.py), peak memory
#      (score-8b.*, score-1b.*);
#   3. bench/distill.py: the chunked KD loss against full logits at 8192 tokens x vocab 128256
#      (the 1B student's hidden size 2048, the 8B teacher's 4096), time and peak memory (kd-8192.*);
#      then whole KD steps of a 1B-shaped student from an 8B-shaped teacher: tokens/s, MFU, peak
#      memory (kd-step.*);
#   4. bench/gpu_first_run.py at Llama-3.2-1B's shape: each GPU phase's peak memory against the
#      planner's estimate (gpu_first_run.log, gpu_first_run.json);
#   5. the default DAG with every GPU job given the GPU (distill, teacher_logits, generate, score,
#      validate_counterfactuals, attention) and `--resources gpu=1`, so they run one at a time, each
#      on the device leafpipe.execution.devices claims for it (dag.log; the run's logs, benchmarks,
#      metrics and report in dag-results.tar.gz). One seed instead of the default two, to fit the
#      time: the second replicate runs the same code paths;
#   6. targets.txt: bench/gpu_targets.py's PASS/FAIL lines, computed from steps 2 and 3 (scoring
#      >= 40 % of the bf16 peak on the 8B shape; chunked KD loss <= 2 GB at 8192 x 128256).
# Everything goes to $OUT (default ./gpu-run). Each step has a time limit, cut to what is left of
# the run's; one that fails or runs out does not stop the next. The most wanted figures come first.
# Python: $PYTHON (default python3) with CUDA torch; packages it lacks travel as wheels in .whl/
# (installed to /tmp/site first).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${OUT:-./gpu-run}" && cd "${OUT:-./gpu-run}" && pwd)
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + ${GPU_RUN_TOTAL_S:-530}))
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

# step NAME MAX_S COMMAND...: COMMAND, its output in $OUT/NAME.log, stopped after MAX_S seconds or
# at the run's deadline, less 30 s kept for stopping it and for the summary.
step() {
  local name=$1 limit=$2 left=$((DEADLINE - SECONDS - 30))
  shift 2
  if ((left < limit)); then limit=$left; fi
  if ((limit < 10)); then
    echo "$name: not run: the run's time is spent"
    return
  fi
  timeout -s INT -k 20 "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? (limit $limit s; log $name.log)"
  tail -n 12 "$OUT/$name.log"
}

step score-8b 110 $PY bench/score.py --device cuda --shape llama-3.1-8b --samples 32 \
  --json "$OUT/score-8b.json"
step kd-8192 60 $PY bench/distill.py --device cuda --vocab 128256 --seq 8192 --hidden 2048 \
  --teacher-hidden 4096 --repeats 3 --json "$OUT/kd-8192.json"
step kd-step 70 $PY bench/distill.py --device cuda --gpu-step --steps 5 --json "$OUT/kd-step.json"
step score-1b 50 $PY bench/score.py --device cuda --shape llama-3.2-1b --samples 64 \
  --json "$OUT/score-1b.json"
step gpu_first_run 150 $PY bench/gpu_first_run.py --device cuda --shape llama-3.2-1b \
  --out "$OUT/gpu_first_run.json"

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
step dag 300 $PY -m snakemake --workflow-profile profiles/local-gpu --configfile config/config.yaml \
  "$OVERRIDES" --resources gpu=1 --cores all --keep-going
(cd "$RESULTS" 2>/dev/null && find . -type f -size -4M \( -name '*.log' -o -name '*.tsv' -o -name '*.json' \
  -o -name '*.csv' -o -name '*.md' \) | tar -czf "$OUT/dag-results.tar.gz" -T -)
rm -rf "$(dirname "$RESULTS")"
$PY bench/gpu_targets.py --score "$OUT/score-8b.json" --kd "$OUT/kd-8192.json" | tee "$OUT/targets.txt"
ls -l "$OUT"
