# llmq_embed_text(OUTPUT file.cpp NAMESPACE ns FILES name=path...): generates OUTPUT at
# build time (cmake/embed_text.cmake) with one `std::string_view ns::name()` per file,
# regenerated whenever a file changes. Add OUTPUT to a target's sources.
set(LLMQ_EMBED_TEXT_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/embed_text.cmake)
function(llmq_embed_text)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "OUTPUT;NAMESPACE" "FILES")
  set(depends "")
  foreach(entry IN LISTS arg_FILES)
    string(REGEX REPLACE "^[^=]*=" "" path "${entry}")
    list(APPEND depends "${path}")
  endforeach()
  string(REPLACE ";" "|" files "${arg_FILES}")  # one argument; the script splits it
  add_custom_command(
    OUTPUT ${arg_OUTPUT}
    COMMAND ${CMAKE_COMMAND} -DOUTPUT=${arg_OUTPUT} -DNAMESPACE=${arg_NAMESPACE}
            "-DFILES=${files}" -P ${LLMQ_EMBED_TEXT_SCRIPT}
    DEPENDS ${depends} ${LLMQ_EMBED_TEXT_SCRIPT}
    COMMENT "Embedding ${arg_NAMESPACE}"
    VERBATIM)
endfunction()

# The dashboard of llmq-gateway (apps/gateway/dashboard/): its sources, generated into
# OUTPUT_DIR, in the list variable VAR.
function(llmq_gateway_dashboard_sources var output_dir)
  set(dir ${PROJECT_SOURCE_DIR}/apps/gateway/dashboard)
  set(out ${output_dir}/dashboard_assets.cpp)
  llmq_embed_text(OUTPUT ${out} NAMESPACE llmq::gateway::dashboard_assets
                  FILES index_html=${dir}/index.html app_js=${dir}/app.js app_css=${dir}/app.css)
  set(${var} ${PROJECT_SOURCE_DIR}/apps/gateway/dashboard.cpp ${out} PARENT_SCOPE)
endfunction()
