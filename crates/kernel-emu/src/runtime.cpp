// The block scheduler: runs each block's threads as fibers (ucontext) on the calling
// OS thread, switching at barriers, and reports a barrier no thread can pass.
#include <ucontext.h>

#include <cstdio>
#include <memory>
#include <vector>

#include "emu.h"

namespace emu {
thread_local Place place;

namespace {
constexpr std::size_t STACK_BYTES = 256 * 1024;

struct Barrier {
  unsigned arrived = 0, live = 0;
  uint64_t generation = 0;
};

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  bool done = false;
};

struct Launch {
  void (*call)(void *const *) = nullptr;
  void *const *params = nullptr;
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  unsigned current = 0, threads = 0;
  Barrier block;
  std::vector<Barrier> warps;
  std::vector<uint64_t> slots;
  std::vector<unsigned char> exchange;
  uint64_t progress = 0;
};

thread_local Launch *running = nullptr;

void yield_to_scheduler() {
  Launch &l = *running;
  swapcontext(&l.fibers[l.current].context, &l.scheduler);
}

Barrier &barrier_of(int warp) { return warp < 0 ? running->block : running->warps[warp]; }

void thread_main() {
  Launch &l = *running;
  l.call(l.params);
  const unsigned me = l.current;
  l.fibers[me].done = true;
  l.block.live -= 1;
  l.warps[me / 32].live -= 1;
  l.progress += 1;
  // uc_link returns to the scheduler.
}

// Sets `place` for fiber `t` of the block.
void enter(const dim3 &block_dim, unsigned t) {
  place.thread = {t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
}

// Runs one block to its end; false on a deadlock.
bool run_block(Launch &l, const dim3 &block_dim) {
  const unsigned n = l.threads;
  l.block = Barrier{0, n, 0};
  l.warps.assign((n + 31) / 32, Barrier{});
  for (unsigned t = 0; t < n; ++t) l.warps[t / 32].live += 1;
  for (unsigned t = 0; t < n; ++t) {
    Fiber &f = l.fibers[t];
    f.done = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = STACK_BYTES;
    f.context.uc_link = &l.scheduler;
    makecontext(&f.context, thread_main, 0);
  }
  unsigned remaining = n;
  while (remaining > 0) {
    const uint64_t before = l.progress;
    for (unsigned t = 0; t < n; ++t) {
      if (l.fibers[t].done) continue;
      l.current = t;
      enter(block_dim, t);
      swapcontext(&l.scheduler, &l.fibers[t].context);
      if (l.fibers[t].done) remaining -= 1;
    }
    if (remaining > 0 && l.progress == before) return false;
  }
  return true;
}
}  // namespace

void barrier(int warp) {
  Launch &l = *running;
  Barrier &b = barrier_of(warp);
  const uint64_t generation = b.generation;
  b.arrived += 1;
  l.progress += 1;
  while (b.generation == generation) {
    if (b.arrived >= b.live) {
      b.arrived = 0;
      b.generation += 1;
      l.progress += 1;
      break;
    }
    yield_to_scheduler();
  }
}

uint64_t *lane_slot(unsigned lane) {
  Launch &l = *running;
  const unsigned t = (l.current / 32) * 32 + lane;
  return t < l.threads ? &l.slots[t] : nullptr;
}

unsigned linear_thread() { return running->current; }

void warp_exchange(const void *mine, void *all, std::size_t bytes) {
  constexpr std::size_t SLOT = 64;
  Launch &l = *running;
  const unsigned me = l.current, warp = me / 32;
  std::memcpy(&l.exchange[me * SLOT], mine, bytes < SLOT ? bytes : SLOT);
  barrier(int(warp));
  auto *out = static_cast<unsigned char *>(all);
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned t = warp * 32 + lane;
    if (t < l.threads)
      std::memcpy(out + lane * bytes, &l.exchange[t * SLOT], bytes);
    else
      std::memset(out + lane * bytes, 0, bytes);
  }
  barrier(int(warp));
}
}  // namespace emu

// Runs `call(params)` over the grid; 0 when every block ran to its end.
extern "C" int emu_run(void (*call)(void *const *), void *const *params, const unsigned *grid,
                       const unsigned *block, char *err, std::size_t err_len) {
  const unsigned threads = block[0] * block[1] * block[2];
  if (threads == 0 || threads > 1024 || grid[0] * grid[1] * grid[2] == 0) {
    std::snprintf(err, err_len, "invalid launch: grid %ux%ux%u, block %ux%ux%u", grid[0],
                  grid[1], grid[2], block[0], block[1], block[2]);
    return 1;
  }
  auto l = std::make_unique<emu::Launch>();
  l->call = call;
  l->params = params;
  l->threads = threads;
  l->fibers.resize(threads);
  for (auto &f : l->fibers) f.stack.reset(new char[emu::STACK_BYTES]);
  l->slots.assign(threads, 0);
  l->exchange.assign(threads * 64, 0);
  emu::running = l.get();
  const dim3 block_dim{block[0], block[1], block[2]};
  emu::place.block_dim = block_dim;
  emu::place.grid_dim = {grid[0], grid[1], grid[2]};
  for (unsigned z = 0; z < grid[2]; ++z)
    for (unsigned y = 0; y < grid[1]; ++y)
      for (unsigned x = 0; x < grid[0]; ++x) {
        emu::place.block = {x, y, z};
        if (!emu::run_block(*l, block_dim)) {
          std::snprintf(err, err_len,
                        "deadlock in block (%u, %u, %u): a barrier not every live thread reaches",
                        x, y, z);
          // The blocked fibers' stacks are abandoned with the launch.
          emu::running = nullptr;
          return 1;
        }
      }
  emu::running = nullptr;
  return 0;
}
