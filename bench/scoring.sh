#!/usr/bin/env bash
# Batch scoring of every hourly spot file of ../shared/data through a bundle: one process vs a local
# Dask cluster of 2 workers; checks the two tables are identical.
#   bash bench/scoring.sh models/volmargin-crypto-gbm/1
set -euo pipefail
bundle=${1:?usage: bench/scoring.sh BUNDLE_DIR}
files=$(ls "${VOLMARGIN_SHARED_DATA:-../shared/data}"/*_1h.csv.gz | grep -v _perp_)
out=$(mktemp -d)
for workers in "" "--workers 2"; do
  start=$(date +%s.%N)
  .venv/bin/volmargin score --bundle "$bundle" --data $files --out "$out/scores${workers:+-2}.parquet" --quiet $workers
  echo "wall time ${workers:-single process}: $(echo "$(date +%s.%N) - $start" | bc) s"
done
.venv/bin/python -c "import pandas as pd, sys; a, b = (pd.read_parquet(f'$out/{n}.parquet') for n in ('scores', 'scores-2')); pd.testing.assert_frame_equal(a, b); print('identical:', a.shape)"
rm -rf "$out"
