#!/bin/sh
# entrypoint mirrormaker: a dedicated MirrorMaker 2 for /etc/infra-obs-mm2/mm2.properties, with the JMX exporter
#   agent serving /metrics on $MM2_METRICS_PORT (rules: /etc/infra-obs-mm2/jmx_exporter.yml).
# entrypoint readiness ARGS: the rollback-readiness exporter (mm2_readiness.py ARGS).
set -eu
config=/etc/infra-obs-mm2
case ${1:-mirrormaker} in
  mirrormaker)
    # The JVM's own heap and GC settings come from MM2_JAVA_OPTS (word-split on purpose).
    # shellcheck disable=SC2086
    exec java ${MM2_JAVA_OPTS:--Xmx512m} -XX:+ExitOnOutOfMemoryError \
      "-javaagent:/opt/infra-obs-mm2/jmx_prometheus_javaagent.jar=${MM2_METRICS_PORT:-9404}:$config/jmx_exporter.yml" \
      -Dlog4j2.configurationFile=/opt/infra-obs-mm2/log4j2.properties \
      -cp '/opt/infra-obs-mm2/libs/*' org.apache.kafka.connect.mirror.MirrorMaker "$config/mm2.properties" ;;
  readiness)
    shift
    exec python3 -m mm2_readiness "$@" ;;
  *)
    exec "$@" ;;
esac
