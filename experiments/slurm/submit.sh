#!/bin/bash
# Submits experiments/slurm/run.sbatch with --ntasks = the experiment's boards.count, which an
# #SBATCH line cannot read from the file. Run from the repository root:
#
#   experiments/slurm/submit.sh EXPERIMENT [sbatch options...]
#   e.g. experiments/slurm/submit.sh experiments/quickstart.yaml --partition=cpu --time=1:00:00
#
# QUILT_BUILD_DIR (default build/release), QUILT_OUTPUT and QUILT_LAUNCHER reach the job through
# sbatch's default --export=ALL. Prints sbatch's output (the job id).
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 EXPERIMENT [sbatch options...]" >&2; exit 2; }
experiment=$1
shift
build_dir=${QUILT_BUILD_DIR:-build/release}
quilt=$build_dir/bin/quilt
here=$(dirname "$(realpath "$0")")
[[ -x $quilt ]] || { echo "$0: $quilt not found; build first or set QUILT_BUILD_DIR" >&2; exit 2; }

# `quilt plan` checks the file and prints "run N: ARCH on COUNT x BACKEND board(s)" per run.
plan=$("$quilt" plan "$experiment")
counts=$(sed -n -E 's/^run [^:]+: .* on ([0-9]+) x .*/\1/p' <<<"$plan" | sort -un)
if [[ -z $counts ]]; then
  echo "$0: could not read boards.count from \`quilt plan $experiment\`; use" >&2
  echo "  sbatch --ntasks=<boards.count> $here/run.sbatch $experiment" >&2
  exit 2
fi
if [[ $(wc -l <<<"$counts") -gt 1 ]]; then
  echo "$0: the runs of $experiment need $(paste -sd, - <<<"$counts") boards; one job has one" \
    "rank count. Use a job array per count: quilt plan --slurm (experiments/slurm/README.md)" >&2
  exit 2
fi
exec sbatch --ntasks="$counts" "$@" "$here/run.sbatch" "$experiment"
