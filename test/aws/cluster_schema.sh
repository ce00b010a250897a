#!/usr/bin/env bash
# cluster_schema.sh VENV SOURCE_DIR valid|typo
#
# jobscripts/aws/cluster.yaml through ParallelCluster's own schema, offline (no AWS call;
# AWS_DEFAULT_REGION only tells the schema which region's rules to use), with the
# aws-parallelcluster 3.x package that pcluster_venv.sh installed into VENV.
#   valid  the file loads and describes the cluster docs/AWS.md promises;
#   typo   a copy with one key misspelled (Efa: Enabled -> Enabld) is rejected with an
#          error naming that key, so the check is known to bite.
set -euo pipefail
venv=$1
src=$2
mode=$3
py=$venv/bin/python
[ -x "$py" ] || { echo "cluster_schema: FAIL: no $py; the aws_pcluster_venv test makes it" >&2; exit 1; }
export AWS_DEFAULT_REGION=us-east-1
yaml=$src/jobscripts/aws/cluster.yaml
case $mode in
  valid)
    "$py" "$src/test/aws/check_cluster.py" "$yaml"
    ;;
  typo)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    sed '/^ *Efa:$/{n;s/Enabled:/Enabld:/;}' "$yaml" > "$tmp/cluster.yaml"
    if cmp -s "$yaml" "$tmp/cluster.yaml"; then
      echo "cluster_schema: FAIL: the misspelling did not apply (no 'Efa:' followed by 'Enabled:' in $yaml)" >&2
      exit 1
    fi
    "$py" "$src/test/aws/check_cluster.py" "$tmp/cluster.yaml" --expect-rejected Enabld
    ;;
  *) echo "cluster_schema: FAIL: mode $mode is not valid or typo" >&2; exit 1 ;;
esac
