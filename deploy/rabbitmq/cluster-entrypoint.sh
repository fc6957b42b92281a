#!/bin/sh
# Entrypoint of a node of compose.rabbitmq-cluster.yml: writes the Erlang cookie the nodes share
# (RABBITMQ_CLUSTER_COOKIE) and hands over to entrypoint.sh, the single-node stack's (definitions,
# runtime config, then the image's own entrypoint).
set -eu

die() { echo "brokerstack: configuration error: $*" >&2; exit 1; }

cookie=${RABBITMQ_CLUSTER_COOKIE:-}
cookie_file=/var/lib/rabbitmq/.erlang.cookie

[ -n "$cookie" ] || die "RABBITMQ_CLUSTER_COOKIE is empty: set it, the same on every node"
case "$cookie" in *[!A-Za-z0-9._~-]*) die "RABBITMQ_CLUSTER_COOKIE may only contain letters, digits, '-', '.', '_' and '~'" ;; esac
# Whoever has the cookie controls every node (it grants Erlang distribution, i.e. running any
# code): the public development one is refused in production, like the other credentials
# (worker/settings.py DEVELOPMENT_SECRETS).
if [ "${ENVIRONMENT:-development}" = production ]; then
  case "$cookie" in
    brokerstack-dev|brokerstack-dev-key|brokerstack-test|guest)
      die "ENVIRONMENT=production refuses the development RABBITMQ_CLUSTER_COOKIE: set your own" ;;
  esac
fi

# Erlang refuses a cookie file that others can read.
rm -f "$cookie_file"
(umask 077 && printf '%s' "$cookie" > "$cookie_file")
chmod 400 "$cookie_file"
if [ "$(id -u)" = 0 ]; then
  chown rabbitmq:rabbitmq "$cookie_file"
fi
unset RABBITMQ_CLUSTER_COOKIE
exec /bin/sh /opt/brokerstack/rabbitmq/entrypoint.sh "$@"
