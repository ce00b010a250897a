"""check_cluster.py CLUSTER_YAML [--expect-rejected KEY]

Loads a ParallelCluster 3 cluster file through ParallelCluster's own schema
(pcluster.schemas.cluster_schema.ClusterSchema), offline: AWS_DEFAULT_REGION must be set
and no AWS call is made (the schema checks names, types and allowed values; the
validators that ask AWS about subnets or quotas are not run).

Without --expect-rejected: the file must load, and must describe what docs/AWS.md says it
does (the two GPU queues with EFA and a placement group, FSx for Lustre at /fsx, the
bootstrap as OnNodeConfigured action everywhere). With --expect-rejected KEY: loading must
fail with an error that names KEY (a deliberately broken copy shows the check bites).
"""
import os
import sys

import yaml
from marshmallow import ValidationError
from pcluster.schemas.cluster_schema import ClusterSchema


def load(path):
    with open(path) as f:
        return ClusterSchema(cluster_name="mics").load(yaml.safe_load(f))


def check_content(config):
    queues = {q.name: q for q in config.scheduling.queues}
    want = {"p4d": "p4d.24xlarge", "p5": "p5.48xlarge"}
    problems = []
    if sorted(queues) != sorted(want):
        problems.append(f"queues {sorted(queues)}, expected {sorted(want)}")
    for name, instance in want.items():
        q = queues.get(name)
        if q is None:
            continue
        for cr in q.compute_resources:
            if cr.instance_types != [instance]:
                problems.append(f"queue {name}: instance types {cr.instance_types}, expected [{instance}]")
            if not cr.efa.enabled:
                problems.append(f"queue {name}: EFA not enabled")
        if not q.networking.placement_group.enabled:
            problems.append(f"queue {name}: no placement group")
        if q.custom_actions is None or q.custom_actions.on_node_configured is None:
            problems.append(f"queue {name}: no OnNodeConfigured bootstrap")
    if config.head_node.custom_actions is None or config.head_node.custom_actions.on_node_configured is None:
        problems.append("head node: no OnNodeConfigured bootstrap")
    storage = [(type(s).__name__, s.mount_dir) for s in config.shared_storage or []]
    if ("SharedFsxLustre", "/fsx") not in storage:
        problems.append(f"shared storage {storage}, expected FSx for Lustre at /fsx")
    return problems


def main():
    if not os.environ.get("AWS_DEFAULT_REGION"):
        sys.exit("check_cluster: error: set AWS_DEFAULT_REGION (no AWS call is made; the schema needs a region)")
    path = sys.argv[1]
    expect = sys.argv[3] if len(sys.argv) == 4 and sys.argv[2] == "--expect-rejected" else None
    try:
        config = load(path)
    except ValidationError as e:
        if expect is None:
            sys.exit(f"check_cluster: FAIL: {path} rejected by ParallelCluster's schema: {e.messages}")
        if expect not in str(e.messages):
            sys.exit(f"check_cluster: FAIL: {path} rejected, but the error does not name {expect}: {e.messages}")
        print(f"check_cluster: {path} rejected as expected: {e.messages}")
        return
    if expect is not None:
        sys.exit(f"check_cluster: FAIL: {path} (with the misspelled key {expect}) was accepted")
    problems = check_content(config)
    if problems:
        sys.exit("check_cluster: FAIL: " + "; ".join(problems))
    print(f"check_cluster: {path} valid: queues "
          + ", ".join(f"{q.name} ({q.compute_resources[0].instance_types[0]}, max {q.compute_resources[0].max_count})"
                      for q in config.scheduling.queues))


if __name__ == "__main__":
    main()
