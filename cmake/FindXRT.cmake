# FindXRT: the Xilinx Runtime's native C++ API (xrt::device, xrt::bo, xrt::kernel).
#
# Works with both layouts:
#   Xilinx's packages:  /opt/xilinx/xrt/{include,lib}        (or $XILINX_XRT after setup.sh)
#   Debian's libxrt-dev: /usr/include/xrt, /usr/lib/<multiarch>
# XRT ships no CMake config and Debian's xrt.pc is broken (prefix /usr//usr), so this module finds
# the header and the library itself. Hint: -DXRT_ROOT=/path/to/xrt.
#
# Defines
#   XRT_FOUND, XRT_VERSION (from version.h), XRT_INCLUDE_DIR (the dir that holds xrt/xrt_device.h),
#   XRT_CORE_LIBRARY (libxrt_coreutil), XRT_LIBRARY_DIR (where the device shims live too)
#   imported target XRT::coreutil (headers, libxrt_coreutil, libuuid, threads)

set(_xrt_hints ${XRT_ROOT} $ENV{XRT_ROOT} $ENV{XILINX_XRT} /opt/xilinx/xrt)

find_path(XRT_INCLUDE_DIR
  NAMES xrt/xrt_device.h
  HINTS ${_xrt_hints}
  PATH_SUFFIXES include include/xrt
  PATHS /usr/include/xrt /usr/local/include/xrt
  DOC "Directory holding xrt/xrt_device.h")

find_library(XRT_CORE_LIBRARY
  NAMES xrt_coreutil
  HINTS ${_xrt_hints}
  PATH_SUFFIXES lib lib64
  DOC "libxrt_coreutil (loads the device shim at run time)")

find_library(XRT_UUID_LIBRARY NAMES uuid DOC "libuuid (xrt_uuid.h calls it inline)")
find_path(XRT_UUID_INCLUDE_DIR NAMES uuid/uuid.h DOC "uuid/uuid.h (uuid-dev)")

if(XRT_INCLUDE_DIR AND EXISTS ${XRT_INCLUDE_DIR}/version.h)
  file(STRINGS ${XRT_INCLUDE_DIR}/version.h _xrt_version_line
       REGEX "xrt_build_version\\[\\] = \"[0-9.]+\"")
  string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" XRT_VERSION "${_xrt_version_line}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(XRT
  REQUIRED_VARS XRT_CORE_LIBRARY XRT_INCLUDE_DIR XRT_UUID_LIBRARY XRT_UUID_INCLUDE_DIR
  VERSION_VAR XRT_VERSION
  REASON_FAILURE_MESSAGE
    "install Debian's libxrt-dev and uuid-dev (apt-get install libxrt-dev uuid-dev), or Xilinx's XRT under /opt/xilinx/xrt, or pass -DXRT_ROOT=<prefix>")

if(XRT_FOUND)
  get_filename_component(XRT_LIBRARY_DIR ${XRT_CORE_LIBRARY} DIRECTORY)
  if(NOT TARGET XRT::coreutil)
    find_package(Threads REQUIRED)
    add_library(XRT::coreutil UNKNOWN IMPORTED)
    set_target_properties(XRT::coreutil PROPERTIES
      IMPORTED_LOCATION ${XRT_CORE_LIBRARY}
      INTERFACE_INCLUDE_DIRECTORIES "${XRT_INCLUDE_DIR};${XRT_UUID_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${XRT_UUID_LIBRARY};Threads::Threads")
  endif()
endif()
mark_as_advanced(XRT_INCLUDE_DIR XRT_CORE_LIBRARY XRT_UUID_LIBRARY XRT_UUID_INCLUDE_DIR)
