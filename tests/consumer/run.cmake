# Drives one consumer test (tests/consumer/CMakeLists.txt registers each with ctest):
#   install_core        install the build; find_package(llmq) with hiredis, PostgreSQL,
#                       SQLite3 and OpenSSL unfindable: the core builds and runs, a REQUIRED
#                       component fails naming its package, OPTIONAL ones report FALSE
#   install_header_only install the build; find_package(llmq) with the optional packages
#                       unfindable, llmq::llmq_header_only in two translation units, no
#                       llmq library linked
#   install_components  install the build; find_package with every component, build, run
#   install_layout      install the build; exactly the public headers of the built parts,
#                       self-contained, and the programs in bin/
#   subdirectory, fetchcontent, own_asio
#                       a project that builds the llmq source tree inside its own build
#   source_options      configure the llmq source tree without the optional packages: what
#                       is built and skipped, an explicit LLMQ_WITH_REDIS=ON fails, and an
#                       older Boost is refused
# Arguments: MODE, WORK_DIR, LLMQ_SOURCE_DIR, LLMQ_BINARY_DIR, CXX_COMPILER, LAUNCHER
# (optional compiler launcher), JOBS, BOOST_DIR (where Boost's CMake files are), EXPECTED_HEADERS, EXPECTED_LIBRARIES,
# EXPECTED_PROGRAMS (comma-separated).
cmake_minimum_required(VERSION 3.25)
set(app "${CMAKE_CURRENT_LIST_DIR}/app")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
string(TIMESTAMP started "%s")

# run_step(<name> [FAIL] [MATCH <regex>...] COMMAND <command>...)
# Runs a command; it must succeed (or, with FAIL, fail) and its output must match each
# regex. Prints the step's duration.
function(run_step name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "FAIL" "" "MATCH;COMMAND")
  string(TIMESTAMP t0 "%s")
  execute_process(COMMAND ${arg_COMMAND} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  string(TIMESTAMP t1 "%s")
  math(EXPR seconds "${t1} - ${t0}")
  # Compared with words separated by single spaces, as CMake wraps long messages.
  string(REGEX REPLACE "[ \t\r\n]+" " " output "${out} ${err}")
  if(arg_FAIL AND rc EQUAL 0)
    message(FATAL_ERROR "${name}: succeeded, but must fail: ${arg_COMMAND}\n${output}")
  elseif(NOT arg_FAIL AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${name}: failed (${rc}): ${arg_COMMAND}\n${output}")
  endif()
  foreach(regex IN LISTS arg_MATCH)
    if(NOT output MATCHES "${regex}")
      message(FATAL_ERROR "${name}: output does not match \"${regex}\"\n${output}")
    endif()
  endforeach()
  message(STATUS "${name}: ${seconds} s")
  set(step_output "${output}" PARENT_SCOPE)
endfunction()

set(generator -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
if(LAUNCHER)
  list(APPEND generator "-DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER}")
endif()
set(without_optional_packages
  -DCMAKE_DISABLE_FIND_PACKAGE_hiredis=ON -DCMAKE_DISABLE_FIND_PACKAGE_PostgreSQL=ON
  -DCMAKE_DISABLE_FIND_PACKAGE_SQLite3=ON -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON)
set(prefix "${WORK_DIR}/prefix")

# configure_app(<name> <mode> [MATCH <regex>...] [FAIL] [ARGS <cmake argument>...])
function(configure_app name mode)
  cmake_parse_arguments(PARSE_ARGV 2 arg "FAIL" "" "MATCH;ARGS")
  set(fail)
  if(arg_FAIL)
    set(fail FAIL)
  endif()
  run_step("${name}: configure" ${fail} MATCH ${arg_MATCH}
           COMMAND ${CMAKE_COMMAND} -S "${app}" -B "${WORK_DIR}/${name}" ${generator}
                   -DLLMQ_CONSUMER_MODE=${mode} "-DCMAKE_PREFIX_PATH=${prefix}"
                   "-DLLMQ_SOURCE_DIR=${LLMQ_SOURCE_DIR}" ${arg_ARGS})
endfunction()

# build_and_run_app(<name> <output regex>...)
function(build_and_run_app name)
  run_step("${name}: build" COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/${name}" -j ${JOBS})
  run_step("${name}: run" MATCH ${ARGN}
           COMMAND "${WORK_DIR}/${name}/consumer" "${WORK_DIR}/${name}")
endfunction()

set(answer "consumer: 200 \"gpt-4o\"")
if(MODE MATCHES "^install_")
  run_step("install" COMMAND ${CMAKE_COMMAND} --install "${LLMQ_BINARY_DIR}" --prefix "${prefix}")
endif()

if(MODE STREQUAL "install_core")
  configure_app(probe_required probe_required FAIL ARGS ${without_optional_packages}
                MATCH "component redis needs packages that were not found: hiredis \\(>= 0\\.14\\), OpenSSL")
  configure_app(probe_optional probe_optional ARGS ${without_optional_packages}
                MATCH "probe: llmq::llmq 1 redis FALSE providers FALSE jsonl TRUE")
  configure_app(package package ARGS ${without_optional_packages})
  build_and_run_app(package "${answer}")
elseif(MODE STREQUAL "install_header_only")
  configure_app(header_only header_only ARGS ${without_optional_packages})
  build_and_run_app(header_only "${answer}" "second unit: ok")
  file(STRINGS "${WORK_DIR}/header_only/build.ninja" link_lines REGEX "libllmq")
  if(link_lines)
    message(FATAL_ERROR "the header-only consumer links an llmq library: ${link_lines}")
  endif()
elseif(MODE STREQUAL "install_components")
  configure_app(components components)
  build_and_run_app(components "${answer}" "components: ok")
elseif(MODE STREQUAL "install_layout")
  string(REPLACE "," ";" expected_headers "${EXPECTED_HEADERS}")
  string(REPLACE "," ";" expected_libraries "${EXPECTED_LIBRARIES}")
  string(REPLACE "," ";" expected_programs "${EXPECTED_PROGRAMS}")
  file(GLOB_RECURSE headers RELATIVE "${prefix}/include" "${prefix}/include/*")
  list(TRANSFORM expected_headers PREPEND "llmq/")
  list(SORT headers)
  list(SORT expected_headers)
  if(NOT headers STREQUAL expected_headers)
    message(FATAL_ERROR "installed headers: ${headers}\nexpected (the public headers of "
                        "the built parts): ${expected_headers}")
  endif()
  # Self-contained: each includes only installed llmq headers, by <llmq/...>.
  foreach(header IN LISTS headers)
    file(STRINGS "${prefix}/include/${header}" includes REGEX "^[ \t]*#[ \t]*include")
    foreach(line IN LISTS includes)
      if(line MATCHES "\"")
        message(FATAL_ERROR "${header}: quoted include (a private header?): ${line}")
      elseif(line MATCHES "<(llmq/[^>]+)>" AND NOT CMAKE_MATCH_1 IN_LIST headers)
        message(FATAL_ERROR "${header} includes ${CMAKE_MATCH_1}, which is not installed")
      endif()
    endforeach()
  endforeach()
  file(GLOB libraries RELATIVE "${prefix}/lib" "${prefix}/lib/*.a" "${prefix}/lib/*.so*")
  list(SORT libraries)
  list(SORT expected_libraries)
  if(NOT libraries STREQUAL expected_libraries)
    message(FATAL_ERROR "installed libraries: ${libraries}\nexpected: ${expected_libraries}")
  endif()
  foreach(program IN LISTS expected_programs)
    if(NOT EXISTS "${prefix}/bin/${program}")
      message(FATAL_ERROR "bin/${program} is not installed")
    endif()
    execute_process(COMMAND "${prefix}/bin/${program}" --no-such-option RESULT_VARIABLE rc
                    OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 20)
    if(NOT rc EQUAL 2 OR NOT err MATCHES "unknown")
      message(FATAL_ERROR "bin/${program} --no-such-option: exit ${rc}, expected 2 and a "
                          "message naming the unknown option\n${out}\n${err}")
    endif()
    message(STATUS "bin/${program}: installed, rejects an unknown option (exit 2)")
  endforeach()
  message(STATUS "install layout: ${headers}")
elseif(MODE MATCHES "^(subdirectory|fetchcontent|own_asio)$")
  set(status "llmq: building llmq::llmq. not building llmq::providers \\(LLMQ_WITH_PROVIDERS=OFF\\)")
  configure_app(${MODE} ${MODE} MATCH "${status}")
  build_and_run_app(${MODE} "${answer}")
  # Asio's functions are defined (T: not inline) in the one implementation unit, if any:
  # llmq's with fetchcontent, the application's with own_asio, none header-only.
  load_cache("${WORK_DIR}/${MODE}" READ_WITH_PREFIX consumer_ CMAKE_NM)
  file(GLOB_RECURSE archive "${WORK_DIR}/${MODE}/libllmq.a")
  execute_process(COMMAND "${consumer_CMAKE_NM}" --defined-only -C "${archive}"
                  OUTPUT_VARIABLE symbols COMMAND_ERROR_IS_FATAL ANY)
  string(REGEX MATCHALL "\n[0-9a-f]+ T boost::asio::[^\n]*" asio_definitions "${symbols}")
  list(LENGTH asio_definitions count)
  if(MODE STREQUAL "fetchcontent" AND count EQUAL 0)
    message(FATAL_ERROR "libllmq.a defines no Asio function; it should compile Asio here")
  elseif(NOT MODE STREQUAL "fetchcontent" AND count GREATER 0)
    message(FATAL_ERROR "libllmq.a defines ${count} Asio functions, e.g. ${asio_definitions}")
  endif()
  message(STATUS "libllmq.a defines ${count} Asio functions")
elseif(MODE STREQUAL "source_options")
  set(source_args -S "${LLMQ_SOURCE_DIR}" ${generator} -DLLMQ_BUILD_TESTS=ON
                  -DLLMQ_BUILD_BENCH=ON -DLLMQ_BUILD_APPS=ON -DLLMQ_INSTALL=ON)
  run_step("without optional packages"
           MATCH "llmq: building llmq::llmq, llmq::jsonl. not building llmq::providers \\(OpenSSL \\(>= 1\\.1\\.1\\) not found\\), llmq::redis \\(hiredis \\(>= 0\\.14\\), OpenSSL \\(>= 1\\.1\\.1\\) not found\\), llmq::postgres \\(PostgreSQL not found\\), llmq::sqlite \\(SQLite3 not found\\)"
                 "llmq-gateway needs llmq::providers, llmq::redis, llmq::postgres. not built"
                 "llmq_store_tests needs llmq::redis, llmq::postgres, llmq::sqlite. not built"
                 "llmq_bench_providers needs llmq::providers. not built"
           COMMAND ${CMAKE_COMMAND} ${source_args} -B "${WORK_DIR}/auto"
                   ${without_optional_packages})
  run_step("explicit ON without its package" FAIL
           MATCH "LLMQ_WITH_REDIS=ON, but llmq::redis needs packages that were not found: hiredis \\(>= 0\\.14\\), OpenSSL"
           COMMAND ${CMAKE_COMMAND} ${source_args} -B "${WORK_DIR}/on" -DLLMQ_WITH_REDIS=ON
                   ${without_optional_packages})
  # Boost 1.81 or newer: a newer one is used, an older one (Debian 12 also ships 1.74) is
  # refused rather than used; with BOOST_DIR (the real one) ignored, only the fake is seen.
  foreach(version 1.74.0 1.83.0)
    set(dir "${WORK_DIR}/boost-${version}/lib/cmake/Boost-${version}")
    file(WRITE "${dir}/BoostConfig.cmake"
         "message(STATUS \"fake Boost ${version} in use\")\n"
         "add_library(Boost::headers INTERFACE IMPORTED)\nset(Boost_VERSION ${version})\n")
    file(WRITE "${dir}/BoostConfigVersion.cmake"
         "set(PACKAGE_VERSION ${version})\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n"
         "if(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)\n"
         "  set(PACKAGE_VERSION_COMPATIBLE FALSE)\nendif()\n")
  endforeach()
  # Boost's own directory is ignored (and its twin through /lib on a merged-/usr system).
  string(REGEX REPLACE "^/usr/" "/" twin "${BOOST_DIR}")
  file(WRITE "${WORK_DIR}/ignore-boost.cmake"
       "set(CMAKE_IGNORE_PATH \"${BOOST_DIR};${twin}\" CACHE STRING \"\")\n")
  run_step("Boost 1.74 only" FAIL MATCH "Boost" "version: 1\\.74\\.0"
           COMMAND ${CMAKE_COMMAND} ${source_args} -B "${WORK_DIR}/boost-old"
                   "-DBoost_DIR=${WORK_DIR}/boost-1.74.0/lib/cmake/Boost-1.74.0"
                   -C "${WORK_DIR}/ignore-boost.cmake")
  run_step("Boost 1.83" MATCH "fake Boost 1\\.83\\.0 in use"
           COMMAND ${CMAKE_COMMAND} ${source_args} -B "${WORK_DIR}/boost-new"
                   "-DBoost_DIR=${WORK_DIR}/boost-1.83.0/lib/cmake/Boost-1.83.0"
                   -C "${WORK_DIR}/ignore-boost.cmake")
else()
  message(FATAL_ERROR "run.cmake: unknown MODE \"${MODE}\"")
endif()

string(TIMESTAMP finished "%s")
math(EXPR seconds "${finished} - ${started}")
message(STATUS "${MODE}: passed in ${seconds} s")
