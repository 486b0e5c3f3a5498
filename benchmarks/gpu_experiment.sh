#!/usr/bin/env bash
# One protocol run of experiments/main.py on an accelerator machine that lacks this project's
# data packages and pybullet, as one command whose results come back as a few small files.
#
#   [PROTOCOL=subject_s1_styled_wide] [SEED=2] [SETTINGS="('original','optimised','bone','oracle')"]
#   [LIMIT=530] [PYTHON=python3] bash benchmarks/gpu_experiment.sh OUT_DIR
#
# Expects, in the repository root (both git-ignored, carried to the machine):
#   .whl/    wheels of the packages the machine lacks (tensorflow-datasets, grain, array_record,
#            ml_collections, ... for its Python), installed into /tmp/site;
#   .mocap/  the 1.5 MB copy of pybullet_data's clips (docs/mocap.md, HOURGLASS_MOCAP_DIR), from
#            which the embedded dataset is rendered there (it is 155 MB, over what a call carries).
# The run's work directory is runs/gpu_<protocol>_seed<SEED> (git-ignored, so it stays on a
# machine that is still warm and a second call resumes it: every stage skips what is done).
# After the run (or its LIMIT seconds) OUT_DIR receives: log.txt, machine.txt, and run_*.tgz
# archives of the work directory without its training checkpoints (each under 16 MB).
set -u
py=${PYTHON:-python3}
out=${1:?OUT_DIR}
protocol=${PROTOCOL:-subject_s1_styled_wide}
seed=${SEED:-2}
settings=${SETTINGS:-"('original','optimised','bone','oracle')"}
work=runs/gpu_${protocol}_seed${seed}
mkdir -p "$out" runs
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 HOURGLASS_DATA_DIR=/tmp/hourglass_tfds
[[ -d .mocap ]] && export HOURGLASS_MOCAP_DIR=$PWD/.mocap
if [[ -d .whl && ! -f /tmp/site/.done ]]; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && touch /tmp/site/.done
fi
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi -L; nproc; "$py" -c "import jax, flax, optax, orbax.checkpoint, grain, \
tensorflow_datasets as t, google.protobuf as p; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, 'tfds', t.__version__, 'protobuf', p.__version__, \
jax.devices())"; } >"$out/machine.txt" 2>&1

start=$SECONDS
timeout "${LIMIT:-530}" "$py" -m experiments.main \
  --config="experiments/configs/${protocol}.py" --config.seed="$seed" --workdir="$work" \
  "--config.finetune.settings=${settings}" >>"$out/log.txt" 2>&1
echo "experiments.main: exit $? after $((SECONDS - start)) s" | tee -a "$out/log.txt"

# Small outputs and the exported models (no checkpoints/ or tb/): each archive under 16 MB.
cd "$work" || exit 1
tar czf "$out/run_results.tgz" --ignore-failed-read config.json ./*/DONE.json \
  $(find . -name metrics.jsonl) evaluate/results.json report predict complete/solver_stats.json \
  pretrain2d/model train3d/model 2>/dev/null
tar czf "$out/run_labels.tgz" --ignore-failed-read complete/pseudo_labels.npz 2>/dev/null
tar czf "$out/run_finetuned.tgz" --ignore-failed-read finetune/*/model 2>/dev/null
tar czf "$out/run_evaluate.tgz" --ignore-failed-read evaluate/*.npz 2>/dev/null
ls -la "$out"
