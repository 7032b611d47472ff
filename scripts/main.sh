#!/usr/bin/env bash
# The main job: set up, train the default model on the default dataset, evaluate it, print the report's path.
# Run again, it keeps the finished run in runs/main or continues an interrupted one.
# Extra arguments go to `braintumor train`; other settings need another --out (e.g. --protocol official --out runs/official).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/braintumor train --out runs/main --resume --time-limit-min 14 "$@"
