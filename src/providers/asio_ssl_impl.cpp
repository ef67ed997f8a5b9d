// The one translation unit that compiles Asio's SSL support. llmq::llmq builds Asio with
// BOOST_ASIO_SEPARATE_COMPILATION (src/asio_impl.cpp), which leaves the SSL parts to the
// target that uses them: this one. Targets linking llmq::providers must not compile them
// again.
#include <boost/asio/ssl/impl/src.hpp>
