#pragma once
// How long this process was kept off the CPU by others: the validity rule of `measured` and
// `dilated` runs against a busy host (no MPI, no LibTorch).

namespace quilt::harness {

/// Seconds the threads of this process have spent, since they started, runnable but waiting for a
/// CPU (the kernel's run-queue delay, second field of /proc/self/task/*/schedstat), summed over the
/// threads alive now; negative when the kernel does not report it. Time a thread sleeps or
/// blocks on I/O is not counted: on an idle host this stays near 0 whatever the process does.
/// Cost: one small file read per thread; call it around measured windows, not per batch.
double cpu_wait_s();

}  // namespace quilt::harness
