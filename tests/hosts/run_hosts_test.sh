#!/bin/bash
# CTest entry of the multi-host tests: run_hosts_test.sh TEST_FILE.py
# Exit 77 (CTest SKIP_RETURN_CODE) when the machine cannot host the test bed: not root, or no
# `ip netns`, tc, nft or unshare. One test bed at a time (flock); everything is torn down on exit,
# and leftovers of a killed earlier run (namespaces, their processes, tmpfs mounts) are removed
# first. CTest runs it with QUILT_BUILD_DIR and QUILT_SOURCE_DIR set.
set -euo pipefail

readonly kSkip=77
here=$(dirname "$(realpath "$0")")
skip() {
  echo "SKIP: $*"
  exit "$kSkip"
}

[[ $(id -u) == 0 ]] || skip "the multi-host tests need root (network namespaces, veth, tc)"
for tool in ip tc nft unshare mpirun; do
  command -v "$tool" >/dev/null || skip "$tool is missing (apt-get install iproute2 nftables util-linux openmpi-bin)"
done
ip netns add qtb-probe$$ 2>/dev/null || skip "this kernel or container does not allow \`ip netns add\`"
ip netns delete qtb-probe$$
: "${QUILT_BUILD_DIR:?set QUILT_BUILD_DIR to the CMake build directory (CTest does)}"
[[ -x $QUILT_BUILD_DIR/bin/quilt ]] || { echo "FAIL: $QUILT_BUILD_DIR/bin/quilt not built" >&2; exit 1; }

mkdir -p /run/lock
exec 8>/run/lock/quilt-testbed-tests.lock
flock -w 900 8 || { echo "FAIL: another multi-host test holds the test bed for 15 min" >&2; exit 1; }

sweep_mounts() {
  local m
  for m in $(awk '$2 ~ "^/tmp/quilt-hosts-tmpfs\\." {print $2}' /proc/mounts); do
    umount -l "$m" 2>/dev/null || true
    rmdir "$m" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$?
  "$here/testbed.sh" down || true
  sweep_mounts
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT
"$here/testbed.sh" down
sweep_mounts

cd "$here"
/usr/bin/python3 -m pytest -q -p no:cacheprovider -rsx --durations=0 "$@"
