include(GNUInstallDirs)

# Choices that belong to whoever builds the whole tree: made only when llmq is the
# top-level project, never imposed on a project that embeds llmq.
if(PROJECT_IS_TOP_LEVEL)
  if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
    set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
  endif()
  find_program(LLMQ_CCACHE ccache)
  if(LLMQ_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
    set(CMAKE_CXX_COMPILER_LAUNCHER "${LLMQ_CCACHE}")
  endif()
endif()
set(CMAKE_CXX_EXTENSIONS OFF)  # this directory and below

# Warnings for llmq's own targets; dependencies live in system include dirs.
function(llmq_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
                                           -Wnon-virtual-dtor -Wold-style-cast)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 misreports asio's awaitable frame allocator as mismatched new/delete, and
    # std::string operations inlined at -O1 and above as out-of-bounds or overlapping
    # (GCC bugs 105329, 105651); these warnings are off for GCC only.
    target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete -Wno-restrict
                                             -Wno-array-bounds -Wno-stringop-overflow)
  endif()
  if(LLMQ_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
