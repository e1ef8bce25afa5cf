#!/bin/sh
# Entrypoint of the shardface images (deploy/Dockerfile, deploy/Dockerfile.cpu):
# runs `shardface "$@"` as this process (exec), so SIGTERM from Kubernetes or
# `docker stop` reaches shardface itself and it can stop the job cleanly.
#
# It refuses to start while the job's token is still the placeholder of
# deploy/kubernetes/secret.yaml: a forgotten edit would otherwise run with a
# token that everyone can read in the repository.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/../.." && pwd)
keys=${SHARDFACE_KEYS_DIR:-/etc/shardface/keys}
placeholder=REPLACE-WITH-A-RANDOM-TOKEN

if [ -f "$keys/token" ] && grep -qx -- "$placeholder" "$keys/token"; then
  echo "shardface: $keys/token still holds the placeholder $placeholder; create the Secret with a random token (see deploy/kubernetes/secret.yaml)" >&2
  exit 2
fi

exec node "$root/dist/src/cli/main.js" "$@"
