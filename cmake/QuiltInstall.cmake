# `cmake --install <build> --prefix P`: the quilt binary, the libraries and their headers with an
# exported package (find_package(Quilt) + quilt::harness from another project), the Python module,
# the board profiles and the experiments. Included from the top-level CMakeLists.txt.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(QUILT_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Quilt CACHE STRING
    "Where QuiltConfig.cmake is installed, relative to the prefix")
set(QUILT_INSTALL_PYTHONDIR lib/python3/dist-packages CACHE STRING
    "Where the Python package `quilt` is installed, relative to the prefix (Debian's layout)")
# Headers keep their folder (#include "harness/runner.h") under include/quilt/.
set(QUILT_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/quilt)

# Exported as quilt::<name>. The INTERFACE helpers travel too: the static libraries name them
# (quilt::warnings only as a link-only dependency, so its flags never reach a consumer).
set(_quilt_exported
  quilt_common:common
  quilt_models:models quilt_trainers:trainers quilt_backends:backends
  quilt_board_profile:board_profile quilt_partitioners:partitioners
  quilt_partitioners_from_model:partitioners_from_model quilt_results:results
  quilt_config:config quilt_harness:harness
  quilt_torch:torch quilt_hdf5:hdf5 quilt_warnings:warnings)
set(_quilt_targets "")
foreach(_pair IN LISTS _quilt_exported)
  string(REPLACE ":" ";" _pair "${_pair}")
  list(GET _pair 0 _target)
  list(GET _pair 1 _name)
  set_target_properties(${_target} PROPERTIES EXPORT_NAME ${_name})
  list(APPEND _quilt_targets ${_target})
endforeach()

install(TARGETS quilt RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS ${_quilt_targets} EXPORT QuiltTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${QUILT_INSTALL_INCLUDEDIR})
foreach(_dir common models trainers backends partitioners results harness)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${_dir}/ DESTINATION ${QUILT_INSTALL_INCLUDEDIR}/${_dir}
          FILES_MATCHING PATTERN "*.h" PATTERN "python" EXCLUDE PATTERN "profiles" EXCLUDE)
endforeach()

install(EXPORT QuiltTargets NAMESPACE quilt:: DESTINATION ${QUILT_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/QuiltConfig.cmake.in
  ${PROJECT_BINARY_DIR}/QuiltConfig.cmake INSTALL_DESTINATION ${QUILT_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/QuiltConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/QuiltConfig.cmake ${PROJECT_BINARY_DIR}/QuiltConfigVersion.cmake
        ${PROJECT_SOURCE_DIR}/cmake/FindXRT.cmake
        DESTINATION ${QUILT_INSTALL_CMAKEDIR})

# Board profiles (the built-in ones are also compiled into the binary; `quilt` looks up other
# names in this folder, see backends/README.md) and the experiment files.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/backends/profiles/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/quilt/profiles FILES_MATCHING PATTERN "*.yaml")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/experiments/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/quilt/experiments)

# The Python module: the package folder <build>/python/quilt/ when the build makes one, else the
# extension module itself.
if(QUILT_BUILD_PYTHON)
  install(CODE "
    set(_dest \"\${CMAKE_INSTALL_PREFIX}/${QUILT_INSTALL_PYTHONDIR}\")
    if(EXISTS \"${PROJECT_BINARY_DIR}/python/quilt/__init__.py\")
      file(INSTALL \"${PROJECT_BINARY_DIR}/python/quilt\" DESTINATION \"\${_dest}\"
           PATTERN \"__pycache__\" EXCLUDE)
    else()
      file(INSTALL \"$<TARGET_FILE:quilt_python>\" DESTINATION \"\${_dest}\")
    endif()")
endif()
