/* Compiler hints shared by every Switchyard BPF source. libbpf's
 * bpf_helpers.h provides __always_inline and SEC() but not branch hints.
 */
#ifndef SWITCHYARD_COMPILER_H
#define SWITCHYARD_COMPILER_H

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#endif

#ifndef unlikely
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

#endif /* SWITCHYARD_COMPILER_H */
