//! One heap for the whole process.
//!
//! glibc gives each thread that allocates its own arena (up to eight per core)
//! and keeps what is freed in it for that arena's later use. Received messages
//! are allocated by whichever tokio worker polls the connection, so over time
//! every worker's arena grows to hold the receive budget (module `conn` of the
//! library) and keeps it: measured under the flood test
//! (`tests/tests/flood.rs`) on 2 cores, the receiver's peak RSS was 36 to 70 MiB
//! with two arenas holding 20 to 27 MiB each, against 31 to 39 MiB with one. On
//! more cores it would grow with their number. The allocations are few and
//! large (chunks, messages), so one arena costs no measurable time: a 1 GiB
//! transfer took the same CPU and wall time either way (docs/PERFORMANCE.md).

/// Keeps glibc to one arena, unless `MALLOC_ARENA_MAX` says otherwise (glibc
/// reads it itself). Call it first thing in `main`, before any other thread
/// starts. A no-op where the C library is not glibc.
pub fn one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a parameter of the allocator, and is called
    // before any other thread exists, so no allocation races with it.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
