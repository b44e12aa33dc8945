#!/usr/bin/env bash
# Install size and cold start of the serving runtime alone: a fresh venv with `pip install ./serving`.
#   bash bench/serving_install.sh models/nn/1
set -euo pipefail
bundle=${1:?usage: bench/serving_install.sh BUNDLE_DIR}
venv=$(mktemp -d)/venv
python3.11 -m venv "$venv"
start=$(date +%s.%N)
"$venv/bin/pip" install -q "$(dirname "$0")/../serving" 2>/dev/null
echo "install: $(echo "$(date +%s.%N) - $start" | bc) s"
echo "site-packages: $(du -sm "$venv"/lib/python3.11/site-packages | cut -f1) MB ($("$venv/bin/pip" list 2>/dev/null | tail -n +3 | awk '{print $1}' | tr '\n' ' '))"
"$venv/bin/python" - "$bundle" <<'PY'
import sys, time
began = time.perf_counter()
import volmargin_serving as vs
runtime = vs.load(sys.argv[1])
print(f"cold import + load + self-test: {time.perf_counter() - began:.3f} s")
import numpy as np  # the incremental state too: started from the golden rows, one more day folded in
golden = np.load(f"{sys.argv[1]}/golden.npz")
state = runtime.stream(golden["inputs"][0], golden["dates"][0], as_of=golden["dates"][0, -1])
day = golden["dates"][0, -1] + np.timedelta64(1, "D")
print(f"incremental update: volatility {state.update(golden['inputs'][0, -1], day, as_of=day).volatility[0]:.4f}")
heavy = {"torch", "pandas", "mlflow", "arch", "sklearn", "lightning", "volmargin"}
print("training-stack modules loaded:", sorted(heavy & {m.split(".")[0] for m in sys.modules}) or "none")
PY
rm -rf "$(dirname "$venv")"
