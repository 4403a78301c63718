"""Prints where to look after `make demo`: Prometheus's address and its targets by region and AZ."""

import json
import subprocess
import sys
from collections import defaultdict

from labinfo import active_targets, container_ip, wait_for

INVENTORY = "inventories/lab/hosts.yml"


def prometheus_container() -> str:
    inventory = json.loads(
        subprocess.run(
            ["ansible-inventory", "-i", INVENTORY, "--list"], check=True, capture_output=True, text=True
        ).stdout
    )
    host = inventory["prometheus"]["hosts"][0]
    return inventory["_meta"]["hostvars"][host]["ansible_host"]


def main() -> int:
    url = f"http://{container_ip(prometheus_container())}:9090"
    targets = wait_for(lambda: (t := active_targets(url)) and all(x["health"] == "up" for x in t) and t, 60)
    targets = targets or active_targets(url)
    by_place = defaultdict(list)
    for target in targets:
        labels = target["labels"]
        by_place[(labels.get("region", "?"), labels.get("az", "?"))].append(target)
    print(f"\nPrometheus: {url}  (API: {url}/api/v1/targets)")
    print(f"{len(targets)} targets discovered through Consul:\n")
    print(f"{'REGION':<15} {'AZ':<15} {'JOB':<15} {'NODE':<15} {'INSTANCE':<20} HEALTH")
    for (region, az), group in sorted(by_place.items()):
        for target in sorted(group, key=lambda t: (t["labels"]["job"], t["labels"].get("node", ""))):
            labels = target["labels"]
            print(
                f"{region:<15} {az:<15} {labels['job']:<15} {labels.get('node', ''):<15} "
                f"{labels['instance']:<20} {target['health']}"
            )
    healthy = all(t["health"] == "up" for t in targets)
    if not healthy:
        print("\nsome targets are not up yet; see the table above", file=sys.stderr)
    return 0 if targets and healthy else 1


if __name__ == "__main__":
    sys.exit(main())
