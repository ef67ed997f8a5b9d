// The application's own Asio implementation unit (it compiles Asio with
// BOOST_ASIO_SEPARATE_COMPILATION); llmq, built with LLMQ_ASIO_IMPL_UNIT=OFF, adds none.
#include <boost/asio/impl/src.hpp>
