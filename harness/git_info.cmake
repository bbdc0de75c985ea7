# Writes build_info.h with the current git commit and dirty flag; rewrites it only when they
# change, so an unchanged tree does not trigger rebuilds. Run by a custom target every build.
execute_process(COMMAND git -C ${SRC} rev-parse HEAD OUTPUT_VARIABLE QUILT_GIT_COMMIT
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR QUILT_GIT_COMMIT STREQUAL "")
  set(QUILT_GIT_COMMIT "unknown")
endif()
execute_process(COMMAND git -C ${SRC} status --porcelain --untracked-files=no
                OUTPUT_VARIABLE status ERROR_QUIET RESULT_VARIABLE rc)
if(rc EQUAL 0 AND status STREQUAL "")
  set(QUILT_GIT_DIRTY false)
else()
  set(QUILT_GIT_DIRTY true)
endif()
configure_file(${IN} ${OUT}.new @ONLY)
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.new ${OUT})
