#!/bin/bash
# End to end under a real SLURM: starts a single-node cluster (tests/slurm/local_cluster.sh),
# runs tests/slurm/test_slurm_jobs.py against it, and always stops the daemons again.
#
# CTest runs it with QUILT_BUILD_DIR and QUILT_SOURCE_DIR set. Exit 77 (CTest SKIP_RETURN_CODE)
# when not root or when the SLURM packages are missing and cannot be installed.
set -euo pipefail

readonly kSkip=77
here=$(dirname "$(realpath "$0")")
source_dir=${QUILT_SOURCE_DIR:-$(realpath "$here/../..")}
: "${QUILT_BUILD_DIR:?set QUILT_BUILD_DIR to the CMake build directory (CTest does)}"
export QUILT_BUILD_DIR QUILT_SOURCE_DIR=$source_dir

skip() {
  echo "SKIP: $*"
  exit "$kSkip"
}

# slurmd launches jobs as their owner and munged/slurmctld want their own users otherwise; only
# root can set that up in a temporary directory.
[[ $(id -u) == 0 ]] || skip "the SLURM test needs root (it starts munged, slurmctld and slurmd)"

packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (add them to the Makefile's PACKAGES to skip this)"
  # A machine without a network or an apt mirror cannot run this test: skip, do not fail.
  { timeout 300 apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; } >&2 || skip "could not install ${missing[*]} with apt-get"
fi
[[ -x $QUILT_BUILD_DIR/bin/quilt ]] || { echo "FAIL: $QUILT_BUILD_DIR/bin/quilt not built" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/quilt-slurm.XXXXXX")
cluster=$work/cluster
# Runs on every exit, failure included. The watchdog started with the cluster covers a SIGKILL
# (a CTest timeout), which no trap sees.
cleanup() {
  local rc=$?
  "$here/local_cluster.sh" stop "$cluster" || true
  if ((rc != 0 && rc != kSkip)); then
    echo "--- daemon logs ($cluster/log) ---" >&2
    tail -n 30 "$cluster"/log/*.log >&2 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

start=$SECONDS
"$here/local_cluster.sh" start "$cluster" $$
echo "cluster up in $((SECONDS - start)) s"
# shellcheck disable=SC1091
source "$cluster/env"
export QUILT_SLURM_WORK=$work
/usr/bin/python3 -m pytest -q -p no:cacheprovider -rs "$here/test_slurm_jobs.py"
