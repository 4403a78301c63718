#!/usr/bin/env bash
# Resolves Apache Kafka from Maven Central for the MirrorMaker 2 lab and tests: the broker (kafka.Kafka), its KRaft
# storage tool and dedicated MirrorMaker 2 as one flat classpath in $INFRA_OBS_CACHE/kafka/<version>/libs/ (run
# as `java -cp 'libs/*' CLASS`), plus the Prometheus JMX exporter agent as
# $INFRA_OBS_CACHE/kafka/jmx_prometheus_javaagent-<version>.jar. Versions come from the lab's versions.yml.
# Maven uses a private local repository, $INFRA_OBS_CACHE/maven, so a rebuild of libs/ needs no network.
# Every jar must match scripts/kafka-jars.sha256 (sha256sum format; the agent is named without a directory) and
# no jar may be missing or extra; `--update-manifest` rewrites that file from what was resolved, for version bumps.
# Idempotent (a stamp records the manifest it was checked against); prints the libs directory on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

update_manifest=false
case "$*" in
  "") ;;
  --update-manifest) update_manifest=true ;;
  *) die "usage: $0 [--update-manifest]" ;;
esac

kafka_version=$(lab_var kafka_version)
log4j_version=$(lab_var kafka_log4j_version)
agent_version=$(lab_var jmx_exporter_version)
manifest="$REPO_ROOT/scripts/kafka-jars.sha256"
top="$INFRA_OBS_CACHE/kafka"
libs="$top/$kafka_version/libs"
agent_name="jmx_prometheus_javaagent-$agent_version.jar"
stamp="$top/$kafka_version/.verified"

mkdir -p "$top"
# Two runs at once (parallel test sessions) would race on the renames below.
exec 9>"$top/.lock"
flock 9

want_stamp() { sha256sum <"$manifest" | cut -d' ' -f1; }
if ! $update_manifest && [[ -f $manifest && -f $stamp && -d $libs && -f $top/$agent_name && $(cat "$stamp") == "$(want_stamp)" ]]; then
  printf '%s\n' "$libs"
  exit 0
fi

command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
tmp=$(mktemp -d "$top/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The dependency plugin is pinned (Maven 3.8's default, 2.8, is from 2014); one run copies the classpath into
# libs/ and the agent beside it, so the agent never lands on the broker's classpath.
cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>infra.obs</groupId>
  <artifactId>kafka-lab</artifactId>
  <version>$kafka_version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$kafka_version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-mirror</artifactId><version>$kafka_version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId><version>$kafka_version</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$log4j_version</version></dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
        <configuration>
          <outputDirectory>$tmp/libs</outputDirectory>
          <artifactItems>
            <artifactItem>
              <groupId>io.prometheus.jmx</groupId>
              <artifactId>jmx_prometheus_javaagent</artifactId>
              <version>$agent_version</version>
              <outputDirectory>$tmp</outputDirectory>
            </artifactItem>
          </artifactItems>
        </configuration>
      </plugin>
    </plugins>
  </build>
</project>
EOF
log "resolving Kafka $kafka_version and JMX exporter $agent_version (Maven repository $INFRA_OBS_CACHE/maven)"
mvn -B -q -C -f "$tmp/pom.xml" -Dmaven.repo.local="$INFRA_OBS_CACHE/maven" \
  dependency:copy-dependencies dependency:copy >"$tmp/mvn.log" 2>&1 ||
  die "mvn failed: $(grep -m3 ERROR "$tmp/mvn.log" || tail -n 5 "$tmp/mvn.log")"
[[ -f $tmp/$agent_name ]] || die "maven did not produce $agent_name"

got=$( (cd "$tmp/libs" && sha256sum -- *.jar) && (cd "$tmp" && sha256sum -- "$agent_name"))
if $update_manifest; then
  printf '%s\n' "$got" | LC_ALL=C sort -k2 >"$manifest"
  log "wrote $manifest ($(wc -l <"$manifest") jars)"
fi
[[ -f $manifest ]] || die "no $manifest: run $0 --update-manifest once and commit it"
problems=$(awk 'NR == FNR { want[$2] = $1; next } { got[$2] = $1 }
  END {
    for (n in want) if (!(n in got)) print "missing " n; else if (got[n] != want[n]) print "sha256 mismatch " n
    for (n in got) if (!(n in want)) print "not in the manifest " n
  }' "$manifest" <(printf '%s\n' "$got") | LC_ALL=C sort)
[[ -z $problems ]] || die "resolved jars do not match $manifest:"$'\n'"$problems"

# Swap in the verified set; the stamp goes last, so an interrupted run is redone rather than trusted.
rm -f "$stamp"
rm -rf "$libs"
mkdir -p "$(dirname "$libs")"
mv "$tmp/libs" "$libs"
mv "$tmp/$agent_name" "$top/$agent_name"
want_stamp >"$tmp/stamp"
mv "$tmp/stamp" "$stamp"
log "Kafka $kafka_version: $(find "$libs" -name '*.jar' | wc -l) jars, $(du -sh "$libs" | cut -f1) in $libs"
printf '%s\n' "$libs"
