#!/usr/bin/env bash
# On a machine with a CUDA GPU: every test marked `cuda` (skipped elsewhere: resume bit for bit
# with LoRA dropout on the CUDA RNG, fp16 loss scaling), then a smoke run of ULD in bf16 (the
# default dtype on CUDA): fine-tune a tiny target, `uldkit unlearn --method uld`, and
# `uldkit generate` from the unlearned model. Needs the project's dependencies installed with a
# CUDA build of torch; a few minutes on one GPU.
#
# Usage: bash scripts/gpu_check.sh [WORK_DIR]   (default: a temporary directory, removed after)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

work="${1:-}"
if [[ -z "$work" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
python - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch " + torch.__version__)
print(f"gpu_check: torch {torch.__version__}, {torch.cuda.get_device_name(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
PY

# The tests: every file that marks one `cuda`, only those tests (no -x: report them all).
mapfile -t files < <(grep -l "pytest.mark.cuda" tests/test_*.py)
status=0
ULDKIT_TEST_MODELS="$work/test_models" python -m pytest -q -p no:cacheprovider -rs -m cuda \
  "${files[@]}" || status=$?

# The smoke: bf16 ULD on CUDA end to end.
uldkit() { python -m uldkit "$@"; }
uldkit finetune --out "$work/target" --people 20 --epochs 5 --device cuda --overwrite
uldkit unlearn --method uld --model "$work/target" --out "$work/uld" --people 20 \
  --forget forget10 --epochs 2 --batch-size 8 --device cuda --overwrite
# (A barely trained target's ULD answer may be empty: the check is that it runs.)
answer="$(uldkit generate --model "$work/uld" --device cuda --max-new-tokens 16 \
  --prompt "Where was the first person of the forget set born?")"
printf 'gpu_check: uld generated: %q\n' "$answer"

if (( status != 0 )); then
  echo "gpu_check: FAIL (the cuda tests, exit $status)" >&2
  exit "$status"
fi
echo "gpu_check: PASS"
