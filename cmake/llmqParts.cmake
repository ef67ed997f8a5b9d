# The parts of llmq: the core (llmq::llmq) and the optional components (llmq::providers,
# llmq::redis, llmq::postgres, llmq::sqlite, llmq::jsonl). Which are built, their public
# headers, how Asio is compiled, and their install rules (one export file per part).

# LLMQ_WITH_<COMPONENT> (cache, AUTO | ON | OFF; default AUTO): AUTO builds a component when
# its packages are found, ON requires them, OFF leaves it out. Sets LLMQ_BUILT_COMPONENTS
# and prints what is built and why the rest is not.
function(llmq_select_components)
  set(built)
  set(skipped)
  foreach(component IN LISTS LLMQ_COMPONENTS)
    string(TOUPPER "${component}" upper)
    set(option LLMQ_WITH_${upper})
    set(${option} AUTO CACHE STRING
        "Build llmq::${component}: AUTO (when its packages are found), ON or OFF")
    set_property(CACHE ${option} PROPERTY STRINGS AUTO ON OFF)
    set(choice "${${option}}")
    string(TOUPPER "${choice}" choice_upper)
    if(NOT choice_upper MATCHES "^(AUTO|ON|OFF|TRUE|FALSE|YES|NO|Y|N|1|0)$")
      message(FATAL_ERROR "llmq: ${option}=\"${choice}\": expected AUTO, ON or OFF")
    endif()
    if(NOT choice_upper STREQUAL "AUTO" AND NOT choice)
      list(APPEND skipped "llmq::${component} (${option}=${choice})")
      continue()
    endif()
    llmq_find_dependencies(${component} missing)
    if(missing STREQUAL "")
      list(APPEND built llmq::${component})
      list(APPEND components ${component})
    elseif(choice_upper STREQUAL "AUTO")
      list(APPEND skipped "llmq::${component} (${missing} not found)")
    else()
      message(FATAL_ERROR "llmq: ${option}=${choice}, but llmq::${component} needs packages "
                          "that were not found: ${missing}. Install them, or set "
                          "${option}=OFF or AUTO.")
    endif()
  endforeach()
  list(JOIN built ", " built)
  set(line "llmq: building llmq::llmq")
  if(built)
    string(APPEND line ", ${built}")
  endif()
  if(skipped)
    list(JOIN skipped ", " skipped)
    string(APPEND line "; not building ${skipped}")
  endif()
  message(STATUS "${line}")
  set(LLMQ_BUILT_COMPONENTS "${components}" PARENT_SCOPE)
endfunction()

# llmq_check_components(<result-var> <what> <component>...)
# <result-var> is true when every listed component is built; otherwise false, with a status
# line saying that <what> (a program, test or benchmark) is skipped and which it needs.
function(llmq_check_components result what)
  set(missing)
  foreach(component IN LISTS ARGN)
    if(NOT component IN_LIST LLMQ_BUILT_COMPONENTS)
      list(APPEND missing llmq::${component})
    endif()
  endforeach()
  if(missing)
    list(JOIN missing ", " missing)
    message(STATUS "llmq: ${what} needs ${missing}; not built")
    set(${result} FALSE PARENT_SCOPE)
  else()
    set(${result} TRUE PARENT_SCOPE)
  endif()
endfunction()

# llmq_public_headers(<target> <name>...)
# Names under include/llmq/ that <target> publishes (installed with it). Claimed even when
# <target> is not built, so that llmq_check_public_headers() knows every header's owner.
function(llmq_public_headers target)
  set_property(GLOBAL APPEND PROPERTY LLMQ_CLAIMED_HEADERS ${ARGN})
  set_property(GLOBAL APPEND PROPERTY LLMQ_HEADER_OWNERS ${target})
  set_property(GLOBAL PROPERTY LLMQ_HEADERS_OF_${target} ${ARGN})
  if(TARGET ${target})
    set_property(GLOBAL APPEND PROPERTY LLMQ_BUILT_HEADERS ${ARGN})
    list(TRANSFORM ARGN PREPEND "${PROJECT_SOURCE_DIR}/include/llmq/" OUTPUT_VARIABLE files)
    target_sources(${target} PUBLIC FILE_SET HEADERS BASE_DIRS "${PROJECT_SOURCE_DIR}/include"
                                    FILES ${files})
  endif()
endfunction()

# Every file under include/llmq/ is a public header of exactly one part, and every listed
# header exists: a header that only src/ and tests use belongs under src/. A part's
# headers include llmq headers of their own part or of the core only, so that each part
# installs without the others.
function(llmq_check_public_headers)
  get_property(claimed GLOBAL PROPERTY LLMQ_CLAIMED_HEADERS)
  get_property(owners GLOBAL PROPERTY LLMQ_HEADER_OWNERS)
  get_property(core GLOBAL PROPERTY LLMQ_HEADERS_OF_llmq)
  foreach(owner IN LISTS owners)
    get_property(own GLOBAL PROPERTY LLMQ_HEADERS_OF_${owner})
    foreach(header IN LISTS own)
      file(STRINGS "${PROJECT_SOURCE_DIR}/include/llmq/${header}" lines
           REGEX "^[ \t]*#[ \t]*include[ \t]*<llmq/")
      foreach(line IN LISTS lines)
        string(REGEX REPLACE ".*<llmq/([^>]+)>.*" "\\1" included "${line}")
        if(NOT included IN_LIST own AND NOT included IN_LIST core)
          message(FATAL_ERROR "llmq: include/llmq/${header} (${owner}) includes "
                              "llmq/${included}, which belongs to another part")
        endif()
      endforeach()
    endforeach()
  endforeach()
  file(GLOB_RECURSE present RELATIVE "${PROJECT_SOURCE_DIR}/include/llmq"
       "${PROJECT_SOURCE_DIR}/include/llmq/*")
  foreach(header IN LISTS present)
    set(owners 0)
    foreach(name IN LISTS claimed)
      if(name STREQUAL header)
        math(EXPR owners "${owners} + 1")
      endif()
    endforeach()
    if(NOT owners EQUAL 1)
      message(FATAL_ERROR "llmq: include/llmq/${header} is listed by ${owners} parts, not one. "
                          "A public header is listed with its target (llmq_public_headers in "
                          "CMakeLists.txt, src/*/CMakeLists.txt); a header that only src/ "
                          "and tests use belongs under src/.")
    endif()
  endforeach()
  foreach(header IN LISTS claimed)
    if(NOT EXISTS "${PROJECT_SOURCE_DIR}/include/llmq/${header}")
      message(FATAL_ERROR "llmq: public header include/llmq/${header} is listed but missing")
    endif()
  endforeach()
endfunction()

# How llmq's targets compile Asio (LLMQ_ASIO_SEPARATE_COMPILATION, LLMQ_ASIO_IMPL_UNIT).
# Header-only (the default) adds nothing. Separately compiled, the definition is a usage
# requirement of llmq::llmq, and, with LLMQ_ASIO_IMPL_UNIT, llmq::llmq holds Asio's
# implementation (src/asio_impl.cpp) and llmq::asio_ssl that of Asio's SSL support, which
# llmq::providers and llmq::redis link (llmq_link_tls).
function(llmq_configure_asio)
  if(NOT LLMQ_ASIO_SEPARATE_COMPILATION)
    return()
  endif()
  target_compile_definitions(llmq PUBLIC BOOST_ASIO_SEPARATE_COMPILATION)
  if(NOT LLMQ_ASIO_IMPL_UNIT)
    message(STATUS "llmq: Asio compiled separately; the application compiles its implementation")
    return()
  endif()
  message(STATUS "llmq: Asio compiled separately, in llmq::llmq")
  target_sources(llmq PRIVATE "${PROJECT_SOURCE_DIR}/src/asio_impl.cpp")
  set_source_files_properties("${PROJECT_SOURCE_DIR}/src/asio_impl.cpp"
                              PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  if("providers" IN_LIST LLMQ_BUILT_COMPONENTS OR "redis" IN_LIST LLMQ_BUILT_COMPONENTS)
    add_library(llmq_asio_ssl STATIC "${PROJECT_SOURCE_DIR}/src/asio_ssl_impl.cpp")
    add_library(llmq::asio_ssl ALIAS llmq_asio_ssl)
    set_target_properties(llmq_asio_ssl PROPERTIES POSITION_INDEPENDENT_CODE ON
                                                   EXPORT_NAME asio_ssl)
    target_link_libraries(llmq_asio_ssl PUBLIC llmq::llmq OpenSSL::SSL OpenSSL::Crypto)
    llmq_set_warnings(llmq_asio_ssl)
    if(LLMQ_INSTALL)
      llmq_install_part(llmq_asio_ssl llmqTargets-asio_ssl)
    endif()
  endif()
endfunction()

# llmq_link_tls(<target>): OpenSSL, and Asio's compiled SSL support when llmq has it.
function(llmq_link_tls target)
  target_link_libraries(${target} PRIVATE OpenSSL::SSL OpenSSL::Crypto)
  if(TARGET llmq_asio_ssl)
    target_link_libraries(${target} PRIVATE llmq::asio_ssl)
  endif()
endfunction()

# llmq_add_component(<component> SOURCES <file>... HEADERS <name>...)
# The static library llmq_<component> (llmq::<component>, installed with its headers and
# its own export file llmqTargets-<component>.cmake) when the component is built; its
# headers are claimed either way.
function(llmq_add_component component)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;HEADERS")
  set(target llmq_${component})
  if(component IN_LIST LLMQ_BUILT_COMPONENTS)
    add_library(${target} STATIC ${arg_SOURCES})
    add_library(llmq::${component} ALIAS ${target})
    set_target_properties(${target} PROPERTIES EXPORT_NAME ${component}
                                               POSITION_INDEPENDENT_CODE ON)
    target_link_libraries(${target} PUBLIC llmq::llmq)
    llmq_set_warnings(${target})
  endif()
  llmq_public_headers(${target} ${arg_HEADERS})
  if(TARGET ${target} AND LLMQ_INSTALL)
    llmq_install_part(${target} llmqTargets-${component})
  endif()
endfunction()

# llmq_install_part(<target> <export> [<interface target>...]): the library, its headers,
# the export file, and further INTERFACE targets of the same part.
function(llmq_install_part target export)
  get_target_property(header_sets ${target} HEADER_SETS)
  set(headers)
  if(header_sets)
    set(headers FILE_SET HEADERS)
  endif()
  install(TARGETS ${target} EXPORT ${export}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ${headers})
  set_property(GLOBAL APPEND PROPERTY LLMQ_INSTALLED_LIBRARIES ${target})
  # Further targets of the same part without files of their own (INTERFACE libraries).
  foreach(extra IN LISTS ARGN)
    install(TARGETS ${extra} EXPORT ${export})
  endforeach()
  install(EXPORT ${export} NAMESPACE llmq:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/llmq)
endfunction()
