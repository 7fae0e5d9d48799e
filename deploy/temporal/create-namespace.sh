#!/bin/sh
# One-shot job (temporalio/admin-tools): wait until the Temporal frontend answers, then make
# sure Podium's namespace exists. The plain temporalio/server image creates no user namespace
# (the retired auto-setup image did), and `namespace create` fails if it already exists, so
# describe first: this job runs on every `docker compose up`.
#
# Environment: TEMPORAL_ADDRESS (read by the temporal CLI), NAMESPACE, NAMESPACE_RETENTION.
set -eu

namespace="${NAMESPACE:-default}"
retention="${NAMESPACE_RETENTION:-720h}"

# wait_for WHAT COMMAND...: retry COMMAND every 2s, for at most 2 minutes.
wait_for() {
    what="$1"
    shift
    attempt=0
    until "$@" >/dev/null 2>&1; do
        attempt=$((attempt + 1))
        if [ "$attempt" -ge 60 ]; then
            echo "temporal-namespace: gave up waiting for $what at $TEMPORAL_ADDRESS" >&2
            exit 1
        fi
        sleep 2
    done
}

wait_for "a healthy frontend" temporal operator cluster health

if temporal operator namespace describe --namespace "$namespace" >/dev/null 2>&1; then
    echo "temporal-namespace: '$namespace' already exists"
else
    temporal operator namespace create --namespace "$namespace" \
        --retention "$retention" --description "Podium customer- and employee-service workflows"
    echo "temporal-namespace: created '$namespace' (retention $retention)"
fi

# A new namespace reaches the frontend's namespace cache a few seconds after it is created;
# until then the search-attribute job (and the worker) get "namespace not found".
wait_for "namespace '$namespace' to be served" \
    temporal operator search-attribute list --namespace "$namespace"
echo "temporal-namespace: '$namespace' is ready"
