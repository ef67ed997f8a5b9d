include(CMakePackageConfigHelpers)

install(TARGETS llmq EXPORT llmqTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/llmq DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT llmqTargets NAMESPACE llmq:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/llmq)

configure_package_config_file(cmake/llmqConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/llmqConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/llmq)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/llmqConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/llmqConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/llmqConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/llmq)
