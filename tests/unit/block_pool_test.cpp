// The free list behind each request's queue entry and telemetry record.
#include <llmq/detail/block_pool.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {
using llmq::detail::BlockPool;

TEST(BlockPool, ReusesFreedBlocksLastInFirstOut) {
  BlockPool pool(64, 4);
  void* a = pool.allocate(48);
  void* b = pool.allocate(64);
  ASSERT_NE(a, b);
  pool.deallocate(a, 48);
  pool.deallocate(b, 64);
  EXPECT_EQ(pool.allocate(64), b);
  EXPECT_EQ(pool.allocate(32), a);
  pool.deallocate(a, 32);
  pool.deallocate(b, 64);
}

TEST(BlockPool, KeepsAtMostMaxFreeBlocks) {
  BlockPool pool(32, 2);
  std::vector<void*> blocks;
  for (int i = 0; i < 5; ++i) blocks.push_back(pool.allocate(32));
  for (void* p : blocks) pool.deallocate(p, 32);
  // Only the first two freed were kept (the rest went back to the allocator), newest first.
  EXPECT_EQ(pool.allocate(32), blocks[1]);
  EXPECT_EQ(pool.allocate(32), blocks[0]);
  void* fresh = pool.allocate(32);
  EXPECT_NE(fresh, blocks[0]);
  EXPECT_NE(fresh, blocks[1]);
  pool.deallocate(fresh, 32);
  pool.deallocate(blocks[0], 32);
  pool.deallocate(blocks[1], 32);
}

TEST(BlockPool, LargerRequestsBypassThePool) {
  BlockPool pool(16, 4);
  void* big = pool.allocate(1000);
  pool.deallocate(big, 1000);  // not kept: a later small block must not reuse it
  void* small = pool.allocate(16);
  EXPECT_NE(small, big);
  pool.deallocate(small, 16);
}

TEST(BlockPool, SharedAndUniqueOwnersReturnTheirBlocks) {
  auto pool = std::make_shared<BlockPool>(256, 8);
  {
    auto s = std::allocate_shared<std::string>(llmq::detail::PoolAllocator<std::string>(pool),
                                               "a string longer than the inline buffer");
    EXPECT_EQ(*s, "a string longer than the inline buffer");
    EXPECT_EQ(pool->free_blocks(), 0u);
  }
  EXPECT_EQ(pool->free_blocks(), 1u);  // the shared object's block came back
  auto u = llmq::detail::make_pooled<std::vector<int>>(pool, 3, 7);
  EXPECT_EQ(pool->free_blocks(), 0u);  // and was reused
  EXPECT_EQ(u->size(), 3u);
  EXPECT_EQ(u->at(2), 7);
  void* block = static_cast<void*>(u.get());
  u.reset();
  EXPECT_EQ(pool->free_blocks(), 1u);
  auto again = llmq::detail::make_pooled<std::vector<int>>(pool);
  EXPECT_EQ(static_cast<void*>(again.get()), block);
}

}  // namespace
