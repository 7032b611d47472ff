#!/usr/bin/env bash
# Train the model braintumor ships (issue 41): Sartaj + Masoud-Training pooled, leak-free (the
# dedup protocol, near-duplicates grouped across the two collections), without the test images
# of Sartaj's own dedup split and their copies (scripts/release_exclude.py), so that it can be
# compared with today's recipe on them (benchmarks/release_comparison.py). About 45 minutes on
# 2 CPU cores; run again, it continues an interrupted run. Then it installs the model
# (scripts/ship_model.py) unless NO_SHIP=1.
# Data: SARTAJ (default ../shared/data/sartaj) and MASOUD (default ../shared/data/masoud/Training).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SARTAJ=${SARTAJ:-../shared/data/sartaj}
MASOUD=${MASOUD:-../shared/data/masoud/Training}
mkdir -p runs
[ -f runs/release-exclude.txt ] || .venv/bin/python scripts/release_exclude.py runs/release-exclude.txt "$SARTAJ" "$MASOUD"
.venv/bin/braintumor train -d "$SARTAJ" -d "$MASOUD" --protocol dedup --exclude runs/release-exclude.txt \
  --epochs 8 --time-limit-min 60 --out runs/release --resume "$@"
if [ "${NO_SHIP:-0}" != 1 ]; then
  .venv/bin/python scripts/ship_model.py runs/release
fi
