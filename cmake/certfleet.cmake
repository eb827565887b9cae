# Helpers that keep module CMake files short and enforce DESIGN.md's layers.
#
# certfleet_module(NAME SOURCES ... MODULES ... LIBS ...)
#   Adds the library target certfleet_<NAME>. MODULES lists the certfleet modules it may
#   use; configuring fails if one of its files includes a header of any other module, or
#   holds SQL outside the store module.
# certfleet_test(NAME SOURCES ... LIBS ... [FIXTURES ...] [LABELS ...])
#   Adds a GoogleTest executable and registers it with ctest.

set(CERTFLEET_MODULES core pki store blob mail jobs events issuance registry ca provision bulk renewal distribution acme enroll broker http server cli agent)

function(certfleet_check_includes name allowed)
  file(GLOB_RECURSE files "${CMAKE_CURRENT_SOURCE_DIR}/*.h" "${CMAKE_CURRENT_SOURCE_DIR}/*.cc")
  foreach(f IN LISTS files)
    # SQL lives in the store alone (DESIGN.md): a statement anywhere else is refused.
    if(NOT name STREQUAL "store")
      file(STRINGS "${f}" sql REGEX "\"(SELECT|INSERT INTO|UPDATE [a-z_]+ SET|DELETE FROM) ")
      if(sql)
        message(FATAL_ERROR "${f}: SQL outside src/store: ${sql}")
      endif()
    endif()
    file(STRINGS "${f}" includes REGEX "^#include \"[a-z_]+/")
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^#include \"([a-z_]+)/.*" "\\1" used "${line}")
      if(used IN_LIST CERTFLEET_MODULES AND NOT used STREQUAL name AND NOT used IN_LIST allowed)
        message(FATAL_ERROR "${f}: module '${name}' may not use module '${used}' (allowed: ${allowed})")
      endif()
    endforeach()
  endforeach()
endfunction()

function(certfleet_module name)
  cmake_parse_arguments(M "" "" "SOURCES;MODULES;LIBS" ${ARGN})
  certfleet_check_includes(${name} "${M_MODULES}")
  add_library(certfleet_${name} STATIC ${M_SOURCES})
  target_include_directories(certfleet_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  list(TRANSFORM M_MODULES PREPEND certfleet_ OUTPUT_VARIABLE deps)
  target_link_libraries(certfleet_${name} PUBLIC ${deps} ${M_LIBS})
endfunction()

function(certfleet_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;FIXTURES;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "CERTFLEET_TEST_STATE=${CMAKE_BINARY_DIR}/test-state;CERTFLEET_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    LABELS "${T_LABELS}")
  if(T_FIXTURES)
    set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED "${T_FIXTURES}")
  endif()
endfunction()
