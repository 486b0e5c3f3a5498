#!/usr/bin/env bash
# The accelerator checks, as one script: the numerical tests on the GPU, then the solver, the
# `complete` stage and the training-step benchmarks (each JSON into OUT_DIR, each step under
# its own time limit so that one slow step cannot take the others' results with it).
#
#   [STEPS="tests solver stage tiny paper"] [PYTHON=python3] \
#     bash benchmarks/gpu_checks.sh [OUT_DIR] [RUN_DIR]
#
# OUT_DIR defaults to runs/gpu_checks; RUN_DIR (a run with predict/ and complete/, for the
# stage benchmark) to runs/styled19200_seed0, skipped when absent. Needs a GPU-enabled jax.
# On one H200 (2026-11-29) the steps took 142, 149, 126, about 70 and 88 s (start-up and
# compilation included): about 10 minutes in all, so split them with STEPS where one command
# is limited. Results of that run: benchmarks/results/h200_2026-11-29/.
set -u
py=${PYTHON:-python3}
steps=" ${STEPS:-tests solver stage tiny paper} "
out=${1:-runs/gpu_checks}
run=${2:-runs/styled19200_seed0}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2

step() {  # step NAME SECONDS COMMAND...: stdout to NAME.out, stderr appended to stderr.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "=== $name" >>"$out/stderr.log"
  timeout "$limit" "$@" >"$out/$name.out" 2>>"$out/stderr.log"
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$out/steps.txt"
}

nvidia-smi -L >"$out/machine.txt" 2>&1
"$py" -c "import jax, flax, optax, orbax.checkpoint; print('jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" >>"$out/machine.txt" 2>&1

# The tests' conftest asks for 8 CPU devices unless told otherwise: here, the one GPU.
[[ $steps == *" tests "* ]] && JAX_PLATFORMS=cuda XLA_FLAGS= step gpu_tests 200 \
  "$py" -m pytest -q -p no:cacheprovider tests/test_completion_solver.py \
  tests/test_completion_soft.py tests/test_softargmax.py \
  tests/test_metrics.py tests/test_losses.py
[[ $steps == *" solver "* ]] && step completion_bench 200 "$py" benchmarks/completion_bench.py \
  --iters 20 --batch-iters 20 --ref-windows 8 --matmul-precision highest,default
if [[ $steps == *" stage "* && -f "$run/predict/predictions.npz" ]]; then
  step complete_stage_bench 150 "$py" benchmarks/complete_stage_bench.py --workdir "$run" \
    --repeats 1 --matmul-precision highest,default
fi
[[ $steps == *" tiny "* ]] && step train_bench_tiny 120 "$py" benchmarks/train_bench.py \
  --config tiny --cases volumetric:32 --dtypes float32 --steps 20 --repeats 2
[[ $steps == *" paper "* ]] && step train_bench_paper 150 "$py" benchmarks/train_bench.py \
  --config paper --cases volumetric:32 --dtypes bfloat16 --steps 5 --repeats 1 --no_baseline
cat "$out/steps.txt"
