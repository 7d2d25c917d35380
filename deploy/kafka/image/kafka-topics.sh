#!/bin/sh
# kafka-topics.sh as in the Apache Kafka distribution (the Compose file's health check and topic job use it).
# shellcheck disable=SC2086
exec java ${KAFKA_TOOLS_HEAP:--Xmx256m} -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    -cp '/opt/kafka/libs/*:/opt/kafka/tools/*' org.apache.kafka.tools.TopicCommand "$@"
