#!/usr/bin/env bash
# Builds the jwo package's interfaces (msg/) with its CMakeLists.txt into the virtual
# environment given as $1, the way colcon would on a ROS 2 install; pip installs the
# Python side (the Makefile).
set -euo pipefail
venv=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build/jwo"
py="$venv/bin/python"

# The ROS wheels' exported CMake targets name the include paths of the machine that
# built them; point them at this interpreter's headers and numpy's.
py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$py" -c 'import numpy; print(numpy.get_include())')
for f in "$venv"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake; do
  if grep -q '/opt/python/' "$f"; then
    sed -i -E \
      -e "s#/opt/python/[^;\"]*/site-packages/numpy/_core/include#${np_include}#g" \
      -e "s#/opt/python/[^;\"]*/include/python3\.[0-9]+#${py_include}#g" "$f"
  fi
done

mkdir -p "$build"
# colcon, run in this checkout, must not mistake the venv's or the build's packages for ours.
touch "$venv/COLCON_IGNORE" "$build/COLCON_IGNORE"

export PATH="$venv/bin:$PATH"
export CMAKE_PREFIX_PATH="$venv"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_POLICY_VERSION_MINIMUM=3.5
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DJWO_INTERFACES_ONLY=ON \
  -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
  -DBUILD_TESTING=OFF -Wno-dev >"$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -50 "$build/install.log"; exit 1; }
echo "jwo interfaces built into $venv"
