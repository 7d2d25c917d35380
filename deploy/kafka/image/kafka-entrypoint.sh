#!/bin/sh
# One KRaft node configured from KAFKA_* variables, as the apache/kafka image does: each KAFKA_FOO_BAR=v
# becomes foo.bar=v in server.properties. CLUSTER_ID names the cluster (a fixed default: one node, one
# cluster). Storage is formatted on first start only, so a restarted container keeps its topics.
set -eu
: "${KAFKA_LOG_DIRS:=/var/lib/kafka/data}"
: "${CLUSTER_ID:=5L6g3nShT-eMCtK--X86sw}"
export KAFKA_LOG_DIRS
config=/var/lib/kafka/server.properties
env | grep '^KAFKA_' | grep -v -e '^KAFKA_HEAP_OPTS=' -e '^KAFKA_OPTS=' | while IFS='=' read -r name value; do
    key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z_' 'a-z.')
    printf '%s=%s\n' "$key" "$value"
done > "$config"
# Word splitting of the JVM options is intended (several options in one variable).
# shellcheck disable=SC2086
set -- ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties ${KAFKA_OPTS:-} -cp '/opt/kafka/libs/*'
if [ ! -f "$KAFKA_LOG_DIRS/meta.properties" ]; then
    java "$@" kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$config"
fi
exec java "$@" kafka.Kafka "$config"
