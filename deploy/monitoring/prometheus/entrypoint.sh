#!/bin/sh
# Prometheus' entry point in the compose stacks: `entrypoint.sh <stack>` renders <stack>.yml and
# the alert rules into /tmp/prometheus, then runs Prometheus on them.
#   PROMETHEUS_SCRAPE_INTERVAL  scrape and rule evaluation interval (default: the file's, 15s)
#   PROMETHEUS_ALERT_FOR        if set, replaces every rule's `for:` (the compose test's short alerts)
# Prometheus 2 reads no environment variables in its config, hence the rendering.
set -eu
stack="${1:?usage: entrypoint.sh redis|rabbitmq [prometheus options]}"
shift
src=/etc/brokerstack/prometheus
out=/tmp/prometheus
duration='^[0-9][0-9]*\(ms\|s\|m\|h\|d\)$'
check_duration() {
    if ! echo "$2" | grep -q "$duration"; then
        echo "entrypoint.sh: $1 must be a duration such as 15s or 2m (got '$2')" >&2
        exit 2
    fi
}
mkdir -p "$out/rules"
interval="${PROMETHEUS_SCRAPE_INTERVAL:-}"
if [ -n "$interval" ]; then
    check_duration PROMETHEUS_SCRAPE_INTERVAL "$interval"
    sed -e "s/^\( *scrape_interval:\).*/\1 $interval/" -e "s/^\( *evaluation_interval:\).*/\1 $interval/" \
        "$src/$stack.yml" > "$out/prometheus.yml"
else
    cp "$src/$stack.yml" "$out/prometheus.yml"
fi
for rules in "$src"/rules/*.yml; do
    if [ -n "${PROMETHEUS_ALERT_FOR:-}" ]; then
        check_duration PROMETHEUS_ALERT_FOR "$PROMETHEUS_ALERT_FOR"
        sed -e "s/^\( *for:\).*/\1 $PROMETHEUS_ALERT_FOR/" "$rules" > "$out/rules/${rules##*/}"
    else
        cp "$rules" "$out/rules/"
    fi
done
exec /bin/prometheus --config.file="$out/prometheus.yml" --storage.tsdb.path=/prometheus "$@"
