#!/usr/bin/env bash
# install_test.sh BUILD CONSUMER_SRC WORK CMAKE: installs BUILD into WORK/prefix, builds the
# outside project CONSUMER_SRC against it, runs it, and uses the installed quilt and Python
# module. WORK is a fixed folder (so ccache hits on reruns), emptied before and after.
set -euo pipefail
build=$1 src=$2 work=$3 cmake=$4
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

echo "== cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" > "$work/install.log"
for f in bin/quilt lib/cmake/Quilt/QuiltConfig.cmake lib/cmake/Quilt/QuiltConfigVersion.cmake \
         lib/cmake/Quilt/QuiltTargets.cmake include/quilt/harness/runner.h \
         share/quilt/profiles/cpu.yaml share/quilt/experiments/quickstart.yaml; do
  [ -e "$prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
grep -q 'quilt::harness' "$prefix/lib/cmake/Quilt/QuiltTargets.cmake" ||
  { echo "FAIL: no quilt::harness target exported"; exit 1; }

echo "== outside project: find_package(Quilt) + quilt::harness"
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
"$cmake" -S "$src" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  "${launcher[@]}" > "$work/configure.log" || { cat "$work/configure.log"; exit 1; }
"$cmake" --build "$work/consumer" -j2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
out=$("$work/consumer/quilt_consumer" "$prefix/share/quilt/experiments/quickstart.yaml")
echo "$out"
grep -q "quickstart: 2 run(s)" <<< "$out" || { echo "FAIL: unexpected consumer output"; exit 1; }
grep -q "did you mean \`rate\`" <<< "$out" || { echo "FAIL: did_you_mean"; exit 1; }

echo "== installed quilt finds its experiments and its profile folder"
cd "$work"
"$prefix/bin/quilt" validate "$prefix/share/quilt/experiments/quickstart.yaml"
# A profile known only by name, from <prefix>/share/quilt/profiles.
sed 's/^name: .*/name: mine/' "$prefix/share/quilt/profiles/cpu.yaml" \
  > "$prefix/share/quilt/profiles/mine.yaml"
sed 's/^  backend: emulator/  backend: emulator\n  profile: mine/' \
  "$prefix/share/quilt/experiments/quickstart.yaml" > mine.yaml
grep -q 'profile: mine' mine.yaml
plan=$("$prefix/bin/quilt" plan mine.yaml)
grep -q "profile $prefix/share/quilt/profiles/mine.yaml" <<< "$plan" ||
  { echo "$plan"; echo "FAIL: the installed quilt did not use share/quilt/profiles/mine.yaml"; exit 1; }
# The build's quilt does not see that folder: the name is an error (exit 2) there.
set +e
"$build/bin/quilt" plan mine.yaml > /dev/null 2> err.txt
rc=$?
set -e
[ $rc -eq 2 ] || { cat err.txt; echo "FAIL: build quilt exit $rc for an unknown profile"; exit 1; }

echo "== installed Python module"
PYTHONPATH="$prefix/lib/python3/dist-packages" /usr/bin/python3 -c "
import quilt, sys
assert quilt.__file__.startswith('$prefix/'), quilt.__file__
print('quilt module from', quilt.__file__)
"
echo "install test passed"
