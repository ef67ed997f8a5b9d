# LLMQ_BUILD_FUZZ: every target of this build is compiled with libFuzzer's coverage
# instrumentation and ASan + UBSan (errors abort, so the fuzzer reports them as crashes).
# The fuzz targets themselves (tests/fuzz) add -fsanitize=fuzzer, which links libFuzzer's
# main(). Use the `fuzz` preset: it builds only the fuzz targets and what they need.
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "LLMQ_BUILD_FUZZ needs clang++ with libFuzzer (e.g. the 'fuzz' preset: "
                      "clang++-14, Debian packages clang-14 and libfuzzer-14-dev)")
endif()
# UBSan's `function` check is left out: clang 14 cannot emit it for coroutines ("Cannot
# represent a difference across sections").
set(LLMQ_FUZZ_SANITIZERS "address,undefined")
add_compile_options(-fsanitize=fuzzer-no-link,${LLMQ_FUZZ_SANITIZERS} -fno-sanitize=function
                    -fno-sanitize-recover=all -fno-omit-frame-pointer -gline-tables-only)
add_link_options(-fsanitize=${LLMQ_FUZZ_SANITIZERS})
