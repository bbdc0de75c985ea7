#pragma once
// The C allocator's settings for a process that trains or runs tensors in a loop.

namespace quilt::common {

/// Makes glibc's malloc keep the memory the process frees for the next step instead of handing
/// it back to the kernel: blocks below 32 MiB come from the heap (a fixed mmap threshold), and
/// free memory at the top of the heap is kept up to 1 GiB (the trim threshold).
///
/// Why: by default glibc serves blocks over 128 KiB (growing to 32 MiB as they are freed) with
/// mmap and trims the heap top past twice that, so a training step's activations and gradients,
/// freed and allocated again every step, come back as fresh zero-filled pages. On the 2-core VM
/// where this was measured, one epoch of ResNet-18 on 1x28x28 then took 0.9-2.7 s from one
/// repetition to the next (630 k page faults, 3.8 s of system time in 22 s); with these settings
/// it took 0.9-1.2 s (91 k faults, 0.7 s system). Called first thing by `quilt` and the
/// benchmarks; a process of a user's own that links Quilt may call it too. Returns false (and
/// changes nothing more) where the C library is not glibc or refuses a setting.
bool keep_freed_memory();

}  // namespace quilt::common
