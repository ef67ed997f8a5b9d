// The one translation unit that compiles Asio's SSL support (target llmq::asio_ssl).
// llmq::llmq builds Asio with BOOST_ASIO_SEPARATE_COMPILATION (src/asio_impl.cpp), which
// leaves the SSL parts to whoever uses them: every part that speaks TLS (llmq::providers'
// HTTP client, llmq::redis's rediss://) links this target instead of compiling them again,
// so an application may link several of those parts.
#include <boost/asio/ssl/impl/src.hpp>
