#!/usr/bin/env bash
# The main job: set up, train the default model on the default dataset, evaluate it, print the report's path.
# Extra arguments go to `braintumor train` (e.g. --protocol official, --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/braintumor train --out runs/main "$@"
