# The packages each part of llmq needs, in one place: the build (CMakeLists.txt) and the
# installed llmqConfig.cmake both look them up through llmq_find_dependencies().
# Part "core" is llmq::llmq; the others are the optional components, one target each.
# Each entry: <package> [<minimum version>] [MODULE|CONFIG].

set(LLMQ_COMPONENTS providers redis postgres sqlite jsonl)

set(LLMQ_DEPENDENCIES_core "Boost 1.81 CONFIG" "nlohmann_json 3.10" "yaml-cpp" "spdlog"
                           "Threads")
set(LLMQ_DEPENDENCIES_providers "OpenSSL 1.1.1")           # TLS of the HTTP client
set(LLMQ_DEPENDENCIES_redis "hiredis 0.14 MODULE" "OpenSSL 1.1.1")  # rediss://
set(LLMQ_DEPENDENCIES_postgres "PostgreSQL")                # libpq
set(LLMQ_DEPENDENCIES_sqlite "SQLite3")
set(LLMQ_DEPENDENCIES_jsonl "")

# llmq_find_dependencies(<part> <missing-var> [REQUIRED])
# Looks up the packages of <part> and sets <missing-var> to a readable list of those not
# found ("hiredis (>= 0.14)"), empty when all are. Quiet, unless REQUIRED is given: then a
# missing package stops with CMake's own message. CMAKE_DISABLE_FIND_PACKAGE_<name> makes a
# package count as missing. Imported targets of the packages found are created in the
# calling directory.
function(llmq_find_dependencies part missing_var)
  if(NOT DEFINED LLMQ_DEPENDENCIES_${part})
    message(FATAL_ERROR "llmq: unknown part \"${part}\" (parts: core ${LLMQ_COMPONENTS})")
  endif()
  set(mode QUIET)
  if(ARGV2 STREQUAL "REQUIRED")
    set(mode REQUIRED)
  endif()
  # Findhiredis.cmake lives next to this file, in the source tree and when installed.
  list(PREPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_FUNCTION_LIST_DIR}")
  set(missing)
  foreach(entry IN LISTS LLMQ_DEPENDENCIES_${part})
    separate_arguments(args UNIX_COMMAND "${entry}")
    list(GET args 0 name)
    find_package(${args} ${mode})
    if(NOT ${name}_FOUND)
      list(LENGTH args n)
      if(n GREATER 1)
        list(GET args 1 version)
        if(version MATCHES "^[0-9]")
          set(name "${name} (>= ${version})")
        endif()
      endif()
      list(APPEND missing "${name}")
    endif()
  endforeach()
  list(JOIN missing ", " missing)
  set(${missing_var} "${missing}" PARENT_SCOPE)
endfunction()
