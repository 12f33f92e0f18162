#!/bin/sh
# Create the etcd user and role offpeak nodes use, limited to the lock keys:
# airlock's semaphores (shared with FleetLock clients behind airlock) and
# offpeak's own holder records, freeze markers and events.
# Run once against the cluster with root credentials, e.g.
#   ETCDCTL_ENDPOINTS=https://etcd-1.example.net:2379 ETCDCTL_CACERT=... \
#   ETCDCTL_CERT=root.crt ETCDCTL_KEY=root.key ./setup-rbac.sh
set -eu

etcdctl role add offpeak
etcdctl role grant-permission offpeak --prefix=true readwrite com.coreos.airlock/
etcdctl role grant-permission offpeak --prefix=true readwrite offpeak/

# A client certificate with CN=offpeak authenticates as this user; for
# password login set one with `etcdctl user passwd offpeak`.
etcdctl user add offpeak --no-password
etcdctl user grant-role offpeak offpeak

# Turning auth on is cluster-wide: make sure a root user exists first.
etcdctl auth status | grep -q 'Authentication Status: true' || etcdctl auth enable
