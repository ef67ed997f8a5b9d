# llmqConfig.cmake, its version file and the dependency list it shares with the build.
# The parts install their libraries, headers and export files themselves
# (llmq_install_part in cmake/llmqParts.cmake).
include(CMakePackageConfigHelpers)

set(LLMQ_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/llmq)
configure_package_config_file(cmake/llmqConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/llmqConfig.cmake
  INSTALL_DESTINATION ${LLMQ_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/llmqConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/llmqConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/llmqConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/llmqDependencies.cmake
        DESTINATION ${LLMQ_INSTALL_CMAKEDIR})
