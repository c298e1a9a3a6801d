#!/bin/bash
# Learning-rate sweep of the GradDiff and NPO baselines on a finished demo's target, evaluated
# as the demo evaluates (TOFU metrics against its retain model, 48 new tokens), so that ULD is
# compared with the baselines' whole utility / forget-quality frontier, not one setting.
#
#   uldkit demo --out runs/demo && bash scripts/baseline_lr_sweep.sh runs/demo runs/sweep
set -euo pipefail
demo=${1:-runs/demo}
out=${2:-runs/sweep}
mkdir -p "$out"
for spec in "npo 2e-4 5" "npo 5e-4 5" "npo 7e-4 5" "npo 8.5e-4 5" "npo 1e-3 5" \
            "grad_diff 5e-4 4" "grad_diff 1e-3 4" "grad_diff 2e-3 4" "grad_diff 5e-3 4"; do
  read -r method lr epochs <<< "$spec"
  run="$out/${method}_lr$lr"
  if [ ! -f "$run/eval/summary.json" ]; then
    uldkit unlearn --method "$method" --model "$demo/target" --out "$run" --people 40 \
      --lr "$lr" --epochs "$epochs" --batch-size 4 --seed 0 --overwrite > "$run.log" 2>&1
    uldkit eval tofu --model "$run" --people 40 --max-new-tokens 48 --quiet --overwrite \
      --retain-logs "$demo/eval/retain" --out "$run/eval" > "$run.eval.log" 2>&1
  fi
  python - "$run/eval/summary.json" "$method" "$lr" <<'PY'
import json, sys
figures = json.load(open(sys.argv[1]))["figures"]
print(f"{sys.argv[2]:<10} lr {sys.argv[3]:<7} FQ {figures['forget_quality']:.3g}  "
      f"MU {figures['model_utility']:.3f}  forget ROUGE {figures['forget_rouge']:.3f}  "
      f"forget Prob. {figures['forget_prob']:.3f}")
PY
done
