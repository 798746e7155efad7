#!/usr/bin/env bash
# An MLflow tracking server for many writers (a cluster's jobs, parallel local jobs): runs and metrics
# in a database (PostgreSQL, e.g. postgresql+psycopg2://user@dbhost:5432/mlflow), artifacts in a folder
# the server writes (clients upload through the server, so compute nodes need no shared artifact path).
#
#   tools/mlflow_server.sh BACKEND_STORE_URI ARTIFACT_DIR [HOST] [PORT] [WORKERS]
#
# then point the workflow at it: snakemake --config tracking_uri=http://HOST:PORT
# (or `make mlflow-server MLFLOW_DB=... MLFLOW_ARTIFACTS=...`). The server runs in the foreground.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
backend=$1 artifacts=$2 host=${3:-127.0.0.1} port=${4:-5000} workers=${5:-4}
mkdir -p "$artifacts"
exec mlflow server --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
    --host "$host" --port "$port" --workers "$workers"
