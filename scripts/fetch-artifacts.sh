#!/usr/bin/env bash
# Fills the artefact cache with every third-party artefact the lab serves, in its upstream shape with a
# .sha256 beside it, and puts promtool (and yace) on the controller for config and rule checks. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$REPO_ROOT/scripts/fetch-deb.sh" "$(lab_var consul_deb_suite)" consul "$(lab_var consul_deb_version)"
"$REPO_ROOT/scripts/build-prometheus.sh"
# YACE for the cost system; also puts yace on the controller ($INFRA_OBS_CACHE/bin) for its tests.
"$REPO_ROOT/scripts/build-yace.sh"
# Thanos for the global view; also puts thanos on the controller ($INFRA_OBS_CACHE/bin) for its tests.
"$REPO_ROOT/scripts/build-thanos.sh"
# Alertmanager (and amtool, which the alertmanager role's config validation runs); both also on the controller.
"$REPO_ROOT/scripts/build-alertmanager.sh"
"$REPO_ROOT/scripts/fetch-grafana-schema.sh" >/dev/null
"$REPO_ROOT/scripts/build-wheelhouse.sh" probe
"$REPO_ROOT/scripts/build-wheelhouse.sh" cost
"$REPO_ROOT/scripts/build-mm2-image.sh" >/dev/null

# Kafka's jars as one reproducible archive for the lab's brokers (role kafka_lab), remade when the manifest changes
# (the stamp lives outside artifacts/, which the store serves whole).
libs=$("$REPO_ROOT/scripts/fetch-kafka.sh")
kafka_archive="$INFRA_OBS_CACHE/artifacts/kafka/kafka-libs-$(lab_var kafka_version).tar.gz"
manifest_sum=$(sha256sum <"$REPO_ROOT/scripts/kafka-jars.sha256" | cut -d' ' -f1)
if ! artefact_fresh "$kafka_archive" "$INFRA_OBS_CACHE/kafka/.libs-archive" "$manifest_sum"; then
  pack_release "$(dirname "$libs")" libs "$kafka_archive"
  artefact_stamp "$INFRA_OBS_CACHE/kafka/.libs-archive" "$manifest_sum"
fi

# The same promtool as the servers run, for `promtool check` and `promtool test rules` on the controller.
version=$(lab_var prometheus_version)
controller_binary "$INFRA_OBS_CACHE/artifacts/prometheus/prometheus-$version.linux-amd64.tar.gz" \
  "prometheus-$version.linux-amd64/promtool" promtool "$version"

# The lab's consul on the controller, so tests can run `consul validate` on what the role renders.
consul_deb="$INFRA_OBS_CACHE/artifacts/debian/consul_$(lab_var consul_deb_version)_amd64.deb"
bin="$INFRA_OBS_CACHE/bin"
if [[ ! -x $bin/consul-$(lab_var consul_version) ]]; then
  dpkg-deb --fsys-tarfile "$consul_deb" | tar -x -O ./usr/bin/consul >"$bin/consul.tmp"
  chmod 0755 "$bin/consul.tmp"
  mv "$bin/consul.tmp" "$bin/consul-$(lab_var consul_version)"
fi
ln -sfn "consul-$(lab_var consul_version)" "$bin/consul"
