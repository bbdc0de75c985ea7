#pragma once
// The `quilt boards` command: what boards this host has and how fast data reaches them. Single
// process, no MPI.

namespace quilt::harness {

/// `quilt boards [--size MIB[,MIB...]] [--repeats N] [--device N] [--xclbin FILE]
/// [--no-bandwidth]`: lists the XRT devices (index, name, PCIe BDF, uuid of the loaded xclbin,
/// board power or "unavailable"), measures host<->board DMA bandwidth of each (or of --device
/// N; backends::measure_xrt_bandwidth: --size MiB buffers, default 4,16,64, median of --repeats
/// timed syncs each way, default 5, after loading --xclbin if given), and lists the built-in
/// board profiles. Says when XRT's noop shim is active (its numbers mean nothing). argv[0] is the
/// program, argv[1] "boards". Returns 0 when at least one device was listed and every
/// measurement asked for succeeded; 1 when XRT is not built, no device was found, or a device
/// could not be opened or measured (the reason is printed); 2 after printing the error for a
/// bad option. Blocks.
int cmd_boards(int argc, char** argv);

}  // namespace quilt::harness
