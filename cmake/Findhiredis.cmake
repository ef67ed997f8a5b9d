# Findhiredis
# -----------
# Finds the hiredis C library (used by llmq::redis for RESP framing only).
#
# Result: the imported target hiredis::hiredis, and hiredis_FOUND, hiredis_VERSION,
# hiredis_INCLUDE_DIR (the directory holding hiredis/hiredis.h), hiredis_LIBRARY.
# Uses pkg-config hints when available; plain find_path/find_library otherwise.
# (Debian's own HiredisConfig.cmake defines no target, hence this module.)

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_hiredis QUIET hiredis)
endif()

# pkg-config's includedir is .../include/hiredis; we include <hiredis/hiredis.h>.
set(_hiredis_include_hints)
foreach(dir IN LISTS PC_hiredis_INCLUDE_DIRS PC_hiredis_INCLUDEDIR)
  list(APPEND _hiredis_include_hints "${dir}" "${dir}/..")
endforeach()

find_path(hiredis_INCLUDE_DIR NAMES hiredis/hiredis.h HINTS ${_hiredis_include_hints})
find_library(hiredis_LIBRARY NAMES hiredis HINTS ${PC_hiredis_LIBDIR} ${PC_hiredis_LIBRARY_DIRS})
unset(_hiredis_include_hints)

if(hiredis_INCLUDE_DIR AND EXISTS "${hiredis_INCLUDE_DIR}/hiredis/hiredis.h")
  file(STRINGS "${hiredis_INCLUDE_DIR}/hiredis/hiredis.h" _hiredis_version_lines
       REGEX "^#define HIREDIS_(MAJOR|MINOR|PATCH) [0-9]+")
  foreach(part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define HIREDIS_${part} ([0-9]+).*" "\\1" _hiredis_${part}
           "${_hiredis_version_lines}")
  endforeach()
  set(hiredis_VERSION "${_hiredis_MAJOR}.${_hiredis_MINOR}.${_hiredis_PATCH}")
  unset(_hiredis_version_lines)
  unset(_hiredis_MAJOR)
  unset(_hiredis_MINOR)
  unset(_hiredis_PATCH)
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(hiredis
  REQUIRED_VARS hiredis_LIBRARY hiredis_INCLUDE_DIR
  VERSION_VAR hiredis_VERSION)
mark_as_advanced(hiredis_INCLUDE_DIR hiredis_LIBRARY)

if(hiredis_FOUND AND NOT TARGET hiredis::hiredis)
  add_library(hiredis::hiredis UNKNOWN IMPORTED)
  set_target_properties(hiredis::hiredis PROPERTIES
    IMPORTED_LOCATION "${hiredis_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${hiredis_INCLUDE_DIR}")
endif()
