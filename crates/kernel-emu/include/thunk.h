// Calls a kernel with its arguments read from `params` as cuLaunchKernel reads them
// (params[i] points at argument i), after checking that the caller passed as many
// arguments as the kernel takes, each of the kernel's size.
#pragma once
#include <cstddef>
#include <cstdio>
#include <utility>

namespace emu {
template <typename... A, std::size_t... I>
void call_at(void (*kernel)(A...), void *const *params, std::index_sequence<I...>) {
  kernel(*static_cast<A *>(params[I])...);
}

template <typename... A>
int call_checked(void (*kernel)(A...), void *const *params, const std::size_t *sizes,
                 std::size_t count, char *err, std::size_t err_len) {
  constexpr std::size_t want[] = {sizeof(A)..., 0};
  if (count != sizeof...(A)) {
    std::snprintf(err, err_len, "the kernel takes %zu arguments, %zu were passed",
                  sizeof...(A), count);
    return 1;
  }
  for (std::size_t i = 0; i < count; ++i) {
    if (sizes[i] != want[i]) {
      std::snprintf(err, err_len, "argument %zu is %zu bytes, the kernel takes %zu", i,
                    sizes[i], want[i]);
      return 1;
    }
  }
  return 0;
}
}  // namespace emu

// One kernel's entry for the registry: a check of the arguments and a call.
#define EMU_THUNK(k)                                                                        \
  extern "C" int emu_check_##k(void *const *p, const std::size_t *s, std::size_t n, char *e, \
                               std::size_t el) {                                            \
    return emu::call_checked(k, p, s, n, e, el);                                            \
  }                                                                                         \
  extern "C" void emu_call_##k(void *const *p) {                                            \
    emu::call_at(k, p, std::make_index_sequence<emu::arity(k)>{});                          \
  }

namespace emu {
template <typename... A> constexpr std::size_t arity(void (*)(A...)) { return sizeof...(A); }
}  // namespace emu
