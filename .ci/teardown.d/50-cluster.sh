#!/usr/bin/env bash
# Undo .ci/setup.d/50-cluster.sh: stop the cluster and put the machine back as it was.
cd "$(dirname "$0")/../.." && cluster/down.sh
