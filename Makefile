# infra.obs: `make demo` brings up the lab and deploys the site; `make test` runs the whole suite.
# Everything is installed by scripts/ and cached under $(INFRA_OBS_CACHE).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export INFRA_OBS_CACHE ?= /var/cache/infra-obs
export INFRA_OBS_DOWNLOADS ?= $(INFRA_OBS_CACHE)/downloads
export INFRA_OBS_STORE_PORT ?= 19000
VENV := $(INFRA_OBS_CACHE)/venv
export PATH := $(VENV)/bin:$(INFRA_OBS_CACHE)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
COLLECTION := collections/ansible_collections/infra/obs
MOLECULE_SCENARIOS := whitelist probe mm2

.PHONY: setup venv collection demo test check lint unit molecule bench-whitelist bench-probe bench-mm2 bench-deploy bench-cost bench-global store-up store-down \
	lab-up lab-down clean package publish releases is-production plan deploy verify record rollback release

setup: venv
	scripts/setup-host.sh
	scripts/refresh-base-lists.sh >/dev/null
	scripts/fetch-artifacts.sh

# Lint needs only the Python tools: no host packages, images or artefacts.
venv:
	scripts/setup-venv.sh >/dev/null

# The collection as a release ships it: built, and installed as a user installs it (scripts/install-collection.sh).
collection: venv
	scripts/install-collection.sh >/dev/null

store-up: setup
	python scripts/store.py up

store-down:
	python scripts/store.py down

lab-up: store-up
	scripts/lab.sh up

lab-down:
	scripts/lab.sh down

demo: lab-up
	ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml -e infra_obs_batch_size=100%
	python scripts/demo_report.py

# ansible-test sanity checks an install of its own: `make test` runs lint beside the scenarios, and mm2 converges
# from the usual one.
lint: venv
	ruff check .
	ruff format --check .
	yamllint -s .
	scripts/setup-groovy-lint.sh >/dev/null && npm-groovy-lint --noserver --config jenkins/.groovylintrc.json --loglevel warning --failon warning jenkins/Jenkinsfile
	ansible-lint
	python scripts/check_argument_specs.py
	cd $(COLLECTION) && antsibull-changelog lint
	cd "$$(. scripts/lib.sh && scripts/install-collection.sh "$$INFRA_OBS_COLLECTION-sanity")/ansible_collections/infra/obs" && \
		ansible-test sanity --python 3.11 --venv --requirements

# Both cores; tests/conftest.py keeps each file, and the Kafka tests but the rollback file, on one worker.
PYTEST := pytest -q -n 2 --dist loadgroup

unit: store-up
	$(PYTEST)

molecule: store-up collection
	scripts/lab.sh clean infraobs-mol-
	scripts/molecule-test.sh $(MOLECULE_THEN) $(MOLECULE_SCENARIOS)

# The molecule scenarios side by side, lint beside them, and pytest once all but the first (whitelist, the longest
# since the pipeline's and the quality gate's tests) have ended: the scenarios mostly wait on their hosts, and no test
# depends on the machine being idle.
test: MOLECULE_THEN := --beside '$(MAKE) --no-print-directory lint' --then '$(PYTEST)'
test: venv molecule

# Quick feedback: lint and pytest, without the molecule scenarios.
check: lint unit

# The delivery pipeline's stages (jenkins/Jenkinsfile calls each; docs/pipeline.md). A release is packed from the
# tag's commit alone into dist/TAG/, published under releases/TAG/ in the store once, and deployed from what is
# fetched back (INVENTORY and PLAYBOOK are paths inside the release). The lab's store unless another is named.
INVENTORY ?= inventories/lab/hosts.yml
PLAYBOOK ?= playbooks/site.yml
RELEASE_STORE := $(if $(INFRA_OBS_RELEASE_ENDPOINT),venv,store-up)
RELEASE := python scripts/release.py

package: venv
	$(RELEASE) package "$(TAG)"

publish: $(RELEASE_STORE)
	$(RELEASE) publish "$(TAG)"

releases: $(RELEASE_STORE)
	$(RELEASE) list

is-production: venv
	$(RELEASE) is-production "$(INVENTORY)"

# verify, the service-quality gate: PLAYBOOK in check mode on every host (drift from the release) and the
# inventory's checks once on every quality checker (playbooks/verify.yml); a table, and non-zero on any failure.
plan deploy verify: $(RELEASE_STORE)
	$(RELEASE) $@ "$(TAG)" "$(INVENTORY)" "$(LIMIT)" "$(PLAYBOOK)"

record: $(RELEASE_STORE)
	$(RELEASE) record "$(INVENTORY)" "$(RESULT)"

rollback: $(RELEASE_STORE)
	$(RELEASE) rollback "$(INVENTORY)"

# The whole chain outside Jenkins, as its stages run there: a failed stage is recorded too.
release: $(RELEASE_STORE)
	$(MAKE) --no-print-directory package publish plan deploy verify || \
		{ $(MAKE) --no-print-directory record RESULT=failed; exit 1; }
	$(MAKE) --no-print-directory record

# Benchmarks compare with their peer in one run and print ratios; they are not part of `make test`.
bench-whitelist: setup
	python bench/whitelist/run.py

# bench/probe fetches smokeping_prober itself (scripts/fetch-smokeping-prober.sh).
bench-probe: setup
	python bench/probe/run.py

# bench/deploy starts proxies of its own (containers of the base image, reached over SSH) and deploys to them.
bench-deploy: setup store-up
	python bench/deploy/run.py

# bench/cost runs a real MariaDB (Debian's mariadb-server, on loopback) and moto.
bench-cost: setup
	python bench/cost/run.py

# bench/global asks the lab's Thanos query, Prometheus servers and bucket (`make demo` first): it backfills 14 days of
# the probe mesh into the bucket once.
bench-global: setup
	python bench/global/run.py

# bench/mm2 runs real KRaft clusters and MirrorMaker 2 on loopback from the jars of scripts/fetch-kafka.sh.
bench-mm2: setup
	python bench/mm2/run.py

clean: lab-down store-down
