#!/bin/sh
# Entrypoint of a Sentinel of compose.redis-sentinel.yml: renders sentinel.conf to watch the
# primary that the other sentinels name now (REDIS_INITIAL_PRIMARY on the stack's first start),
# then runs `redis-server /data/sentinel.conf --sentinel`. Rendered at every start, so changed
# passwords apply on restart; the sentinel relearns replicas and peers within seconds.
set -eu
. /opt/brokerstack/redis/ha-common.sh

me=$(hostname)
[ -n "${REDIS_PASSWORD:-}" ] || die "REDIS_PASSWORD is empty: set it"
[ -n "${REDIS_SENTINEL_PASSWORD:-}" ] || die "REDIS_SENTINEL_PASSWORD is empty: set it"
check_word REDIS_PASSWORD "$REDIS_PASSWORD"
check_word REDIS_SENTINEL_PASSWORD "$REDIS_SENTINEL_PASSWORD"

primary=$(current_primary "$me")
primary=${primary:-$REDIS_INITIAL_PRIMARY}
echo "brokerstack: $me watches $REDIS_SENTINEL_MASTER on $primary"

umask 077
sed -e "s|@ME@|$me|g" \
    -e "s|@MASTER@|$REDIS_SENTINEL_MASTER|g" \
    -e "s|@PRIMARY@|$primary|g" \
    -e "s|@REDIS_PASSWORD@|$REDIS_PASSWORD|g" \
    -e "s|@SENTINEL_PASSWORD@|$REDIS_SENTINEL_PASSWORD|g" \
    /opt/brokerstack/redis/sentinel.conf > /data/sentinel.conf
unset REDIS_PASSWORD REDIS_SENTINEL_PASSWORD
exec docker-entrypoint.sh redis-server /data/sentinel.conf --sentinel
