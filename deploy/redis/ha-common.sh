# Shared by ha-node.sh and ha-sentinel.sh (compose.redis-sentinel.yml), sourced, not run.
# The nodes and sentinels decide at every start who the primary is by asking the sentinels,
# so a restarted container joins the current topology instead of the one it was created with.

die() { echo "brokerstack: configuration error: $*" >&2; exit 1; }

# Values written into sentinel.conf or passed as arguments: refuse anything that could break out
# of a config line (passwords are documented as URL-safe: letters, digits, - . _ ~).
check_word() {
  case "$2" in *[!A-Za-z0-9._~-]*|'') die "$1 may only contain letters, digits, '-', '.', '_' and '~'" ;; esac
}

: "${REDIS_SENTINEL_MASTER:=mymaster}"
: "${REDIS_SENTINELS:=sentinel-1 sentinel-2 sentinel-3}"
#: The primary when no sentinel answers: the first start of the stack.
: "${REDIS_INITIAL_PRIMARY:=redis-1}"
check_word REDIS_SENTINEL_MASTER "$REDIS_SENTINEL_MASTER"
check_word REDIS_INITIAL_PRIMARY "$REDIS_INITIAL_PRIMARY"

# The primary as the first sentinel that answers names it (host name), or nothing. Short
# timeouts: a sentinel that is down (or whose name does not resolve yet) costs at most a second.
current_primary() {
  for sentinel in $REDIS_SENTINELS; do
    [ "$sentinel" = "${1:-}" ] && continue
    answer=$(REDISCLI_AUTH="${REDIS_SENTINEL_PASSWORD:-}" timeout 2 redis-cli -t 1 -h "$sentinel" -p 26379 \
      --raw sentinel get-master-addr-by-name "$REDIS_SENTINEL_MASTER" 2>/dev/null | head -n 1) || true
    case "$answer" in ''|*[!A-Za-z0-9._-]*|ERR*|NOAUTH*|WRONGPASS*) continue ;; esac
    echo "$answer"
    return 0
  done
  return 0
}
