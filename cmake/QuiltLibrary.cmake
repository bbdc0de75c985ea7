# quilt_add_library(NAME [ON_MODELS] [PUBLIC dep...] [PRIVATE dep...]
#                   [PCH header... | PCH_FROM target] SOURCES src...): the static library
# quilt_NAME with its alias quilt::NAME, our warnings (link-only), includes from the repository
# root (#include "models/zoo.h"), and either its own precompiled headers (PCH) or those of another
# target (PCH_FROM). ON_MODELS: a LibTorch library on top of models/ (PUBLIC quilt::models and
# quilt::torch, quilt_models' precompiled LibTorch header). Included from the top-level
# CMakeLists.txt; each folder keeps its source list as a plain list in its call.
function(quilt_add_library name)
  cmake_parse_arguments(ARG "ON_MODELS" "PCH_FROM" "SOURCES;PUBLIC;PRIVATE;PCH" ${ARGN})
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "quilt_add_library(${name}): unknown arguments `${ARG_UNPARSED_ARGUMENTS}`")
  endif()
  if(ARG_ON_MODELS)
    list(APPEND ARG_PUBLIC quilt::models quilt::torch)
    set(ARG_PCH_FROM quilt_models)
  endif()
  set(target quilt_${name})
  add_library(${target} ${ARG_SOURCES})
  add_library(quilt::${name} ALIAS ${target})
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC} PRIVATE ${ARG_PRIVATE} quilt::warnings)
  if(ARG_PCH)
    target_precompile_headers(${target} PRIVATE ${ARG_PCH})
  elseif(ARG_PCH_FROM)
    target_precompile_headers(${target} REUSE_FROM ${ARG_PCH_FROM})
  endif()
endfunction()
