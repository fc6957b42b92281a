#!/bin/sh
# brokerstack's entrypoint for the RabbitMQ container (compose.rabbitmq.yml): renders the
# definitions and the runtime config from the environment, then hands over to the image's own
# docker-entrypoint.sh. Runs at every start, so a changed RABBITMQ_PASSWORD applies on restart.
set -eu

user=${RABBITMQ_USER:-brokerstack}
vhost=${RABBITMQ_VHOST:-brokerstack}
consumer_timeout=${RABBITMQ_CONSUMER_TIMEOUT:-1800}
template=/opt/brokerstack/rabbitmq/definitions.json
definitions=/etc/rabbitmq/brokerstack-definitions.json
runtime_conf=/etc/rabbitmq/conf.d/30-brokerstack-runtime.conf

die() { echo "brokerstack: configuration error: $*" >&2; exit 1; }

[ -n "${RABBITMQ_PASSWORD:-}" ] || die "RABBITMQ_PASSWORD is empty: set it"
[ "$user" != guest ] || die "RABBITMQ_USER=guest is refused: set RABBITMQ_USER"
[ "$RABBITMQ_PASSWORD" != guest ] || die "RABBITMQ_PASSWORD=guest is refused: set RABBITMQ_PASSWORD"
case "$user" in *[!A-Za-z0-9._-]*|'') die "RABBITMQ_USER may only contain letters, digits, '.', '_' and '-'" ;; esac
case "$vhost" in *[!A-Za-z0-9._-]*|'') die "RABBITMQ_VHOST may only contain letters, digits, '.', '_' and '-'" ;; esac
case "$consumer_timeout" in *[!0-9]*|'') die "RABBITMQ_CONSUMER_TIMEOUT must be a number of seconds" ;; esac

# rabbitmqctl hash_password is a local command (no node needed); HOME elsewhere so that it cannot
# leave a root-owned Erlang cookie in the data directory.
hash=$(HOME=/tmp rabbitmqctl -q hash_password "$RABBITMQ_PASSWORD" | tail -n 1)
case "$hash" in *[!A-Za-z0-9+/=]*|'') die "rabbitmqctl hash_password failed" ;; esac

umask 027
sed -e "s|@RABBITMQ_USER@|$user|g" \
    -e "s|@RABBITMQ_VHOST@|$vhost|g" \
    -e "s|@RABBITMQ_PASSWORD_HASH@|$hash|g" \
    "$template" > "$definitions.tmp"
mv "$definitions.tmp" "$definitions"
printf '# written by brokerstack entrypoint.sh from RABBITMQ_CONSUMER_TIMEOUT (seconds)\nconsumer_timeout = %s000\n' \
  "$consumer_timeout" > "$runtime_conf"
if [ "$(id -u)" = 0 ]; then
  chown root:rabbitmq "$definitions" "$runtime_conf"
fi

# The image's entrypoint (official and stand-in alike) drops to the rabbitmq user. The server
# needs only the hash rendered above, not the password.
unset RABBITMQ_PASSWORD
exec docker-entrypoint.sh "$@"
