#!/bin/sh
# Open MPI's plm_rsh_agent for the test bed (tests/hosts/testbed.sh): called as
#   rsh_agent.sh HOST COMMAND...
# like ssh, it runs COMMAND through a shell "on" HOST: inside HOST's network namespace, in a UTS
# namespace of its own whose host name is the namespace's name (qtb-h1, ...), so every rank reports
# its own host. HOST is an address of the test bed (/run/quilt-testbed/hosts maps it).
set -eu
host=$1
shift
ns=$(awk -v h="$host" '$1 == h {print $2}' /run/quilt-testbed/hosts 2>/dev/null)
if [ -z "$ns" ]; then
  echo "rsh_agent: $host is not a host of the test bed (/run/quilt-testbed/hosts)" >&2
  exit 255
fi
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$ns" "$*"
