#!/bin/sh
# Entrypoint of a Redis node of compose.redis-sentinel.yml: starts as the primary if the
# sentinels name this node (or, on the stack's first start, if it is REDIS_INITIAL_PRIMARY), as a
# replica of the named primary otherwise. The arguments are the redis-server command line of
# deploy/compose.common.yml's redis service; this adds what replication needs.
set -eu
. /opt/brokerstack/redis/ha-common.sh

me=$(hostname)
[ -n "${REDIS_PASSWORD:-}" ] || die "REDIS_PASSWORD is empty: set it"
check_word REDIS_PASSWORD "$REDIS_PASSWORD"

primary=$(current_primary)
primary=${primary:-$REDIS_INITIAL_PRIMARY}
# Replicas authenticate to the primary with its password; every node may become primary.
# Announced by host name: the sentinels hand clients an address that resolves in the network.
set -- "$@" --masterauth "$REDIS_PASSWORD" --replica-announce-ip "$me"
if [ "$primary" != "$me" ]; then
  echo "brokerstack: $me starts as a replica of $primary"
  set -- "$@" --replicaof "$primary" 6379
else
  echo "brokerstack: $me starts as the primary"
fi
unset REDIS_PASSWORD REDIS_SENTINEL_PASSWORD
exec docker-entrypoint.sh "$@"
