#!/usr/bin/env bash
# Builds the MirrorMaker 2 image (roles/mm2/files/image/) from the lab's base image, the Kafka jars and JMX agent of
# scripts/fetch-kafka.sh and the readiness exporter's libraries from PyPI, and saves it for the mirror as
# artifacts/mm2/infra-obs-mm2-VERSION.tar.gz (+ .sha256), VERSION being the role's mm2_image_version (Kafka's
# version and our packaging revision: bump the revision when the image changes, so hosts load the new one).
# Rebuilt only when an input changes (recipe, jars, exporter code, base image); prints the image name.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=$(sed -n 's/^mm2_image_version: "\(.*\)"$/\1/p' "$REPO_ROOT/roles/mm2/defaults/main.yml")
[[ -n $version ]] || die "roles/mm2/defaults/main.yml: no mm2_image_version"
image="localhost/infra-obs-mm2:$version"
out="$INFRA_OBS_CACHE/artifacts/mm2/infra-obs-mm2-$version.tar.gz"
# Outside artifacts/: the store serves everything in there.
stamp="$INFRA_OBS_CACHE/mm2-image.inputs"
recipe="$REPO_ROOT/roles/mm2/files/image"
module_utils="$REPO_ROOT/collections/ansible_collections/infra/obs/plugins/module_utils/kafka_mm2.py"
readiness="$REPO_ROOT/roles/mm2/files/mm2_readiness.py"
python_libs=$(grep -E '^(kafka-python|prometheus_client)==' "$REPO_ROOT/constraints.txt" | sort)

base=$("$REPO_ROOT/scripts/build-base-image.sh")
libs=$("$REPO_ROOT/scripts/fetch-kafka.sh")
agent="$INFRA_OBS_CACHE/kafka/jmx_prometheus_javaagent-$(lab_var jmx_exporter_version).jar"
inputs=$( {
  echo "$base $version $python_libs"
  sha256sum "$recipe"/* "$module_utils" "$readiness" "$REPO_ROOT/scripts/kafka-jars.sha256" "$0" | cut -d' ' -f1
} | sha256sum | cut -c1-16)
if artefact_fresh "$out" "$stamp" "$inputs" && podman image exists "$image"; then
  echo "$image"
  exit 0
fi

log "building $image"
context=$(mktemp -d "$INFRA_OBS_CACHE/mm2-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp -r "$recipe"/. "$context/"
cp -r "$libs" "$context/libs"
cp "$agent" "$context/jmx_prometheus_javaagent.jar"
# The exporter's libraries are pure Python: their wheels, unpacked, are all it needs (no pip in the image).
mkdir -p "$context/wheels" "$context/python"
# shellcheck disable=SC2086
PIP_DISABLE_PIP_VERSION_CHECK=1 "$INFRA_OBS_CACHE/venv/bin/pip" download --quiet --no-deps --only-binary :all: \
  --dest "$context/wheels" $python_libs
for wheel in "$context"/wheels/*.whl; do
  "$INFRA_OBS_CACHE/venv/bin/python" -m zipfile -e "$wheel" "$context/python/"
done
rm -rf "$context/wheels"
cp "$module_utils" "$context/python/kafka_mm2.py"
cp "$readiness" "$context/python/mm2_readiness.py"
podman build --quiet --build-arg "BASE=$base" --label "org.infra-obs.inputs=$inputs" -t "$image" "$context" >/dev/null

mkdir -p "$(dirname "$out")"
podman save --format docker-archive "$image" | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
(cd "$(dirname "$out")" && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")
artefact_stamp "$stamp" "$inputs"
log "saved $out ($(du -h "$out" | cut -f1))"
echo "$image"
