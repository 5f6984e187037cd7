#!/bin/sh
# Container entrypoint for hearth's default deployment profile (docs/DEPLOY.md).
#
# With a replica configured (LITESTREAM_REPLICA_URL, or LITESTREAM_BUCKET / Fly Tigris's
# BUCKET_NAME): restore the database from the replica if there is no local copy yet, then run
# `hearth serve` under `litestream replicate -exec`, which streams every commit to the replica
# and stops hearth (SIGTERM, then a final sync) when the container stops.
# Without one: plain `hearth serve` on the local volume.
# Any arguments run instead, e.g. `docker run IMAGE hearth migrate`.
#
# Started as root (the image's default), it first gives the database's directory to the user
# `hearth` (a new Fly volume is mounted owned by root) and runs itself again as that user, so
# neither hearth nor Litestream ever runs as root. Started as another user, it runs as that user.
set -eu

HEARTH_DB="${HEARTH_DB:-/data/hearth.db}"
export HEARTH_DB

if [ "$(id -u)" = "0" ] && id hearth >/dev/null 2>&1; then
    mkdir -p "$(dirname "$HEARTH_DB")"
    chown hearth:hearth "$(dirname "$HEARTH_DB")"
    exec setpriv --reuid=hearth --regid=hearth --init-groups "$0" "$@"
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
config="${LITESTREAM_CONFIG:-/etc/litestream.yml}"

# `fly storage create` (Tigris) sets BUCKET_NAME, AWS_ENDPOINT_URL_S3 and AWS_REGION.
if [ -z "${LITESTREAM_REPLICA_URL:-}" ] && [ -z "${LITESTREAM_BUCKET:-}" ] && [ -n "${BUCKET_NAME:-}" ]; then
    LITESTREAM_BUCKET="$BUCKET_NAME"
    LITESTREAM_ENDPOINT="${LITESTREAM_ENDPOINT:-${AWS_ENDPOINT_URL_S3:-}}"
    LITESTREAM_REGION="${LITESTREAM_REGION:-${AWS_REGION:-}}"
fi
if [ -n "${LITESTREAM_BUCKET:-}" ] && [ -z "${LITESTREAM_REPLICA_URL:-}" ]; then
    LITESTREAM_PATH="${LITESTREAM_PATH:-hearth}"
fi
export LITESTREAM_REPLICA_URL="${LITESTREAM_REPLICA_URL:-}" LITESTREAM_BUCKET="${LITESTREAM_BUCKET:-}" \
    LITESTREAM_PATH="${LITESTREAM_PATH:-}" LITESTREAM_ENDPOINT="${LITESTREAM_ENDPOINT:-}" \
    LITESTREAM_REGION="${LITESTREAM_REGION:-}"

if [ -z "$LITESTREAM_REPLICA_URL" ] && [ -z "$LITESTREAM_BUCKET" ]; then
    echo "hearth: no Litestream replica configured; serving $HEARTH_DB without replication" >&2
    exec hearth serve
fi

mkdir -p "$(dirname "$HEARTH_DB")"
echo "hearth: restoring $HEARTH_DB from the replica if it is missing locally" >&2
litestream restore -config "$config" -if-db-not-exists -if-replica-exists "$HEARTH_DB"
exec litestream replicate -config "$config" -exec "hearth serve"
