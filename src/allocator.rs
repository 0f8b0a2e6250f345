//! What the operator asks of glibc's allocator, so that its resident memory follows what it
//! holds (the figures: `docs/design/performance.md`, "Fewer resident pages: the allocator's
//! threshold, a smaller binary, a streamed scrape").
//!
//! glibc's malloc serves a block of 128 KiB or more from a mapping of its own, returned whole
//! when freed, but it raises that threshold to the largest such block freed so far. After the
//! first list pages (several MB of JSON each) every later page was carved out of the heap
//! between cached objects, and its pages stayed resident once freed: 10 MiB of a warm
//! restart's peak at 30,000 objects. The threshold is pinned to glibc's default instead.
//!
//! Elsewhere (musl, the container image's C library; jemalloc, the plugin's) nothing is done:
//! those allocators do not move the threshold.

/// glibc's default threshold (128 KiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Pins the mapping threshold, unless `MALLOC_MMAP_THRESHOLD_` sets one (glibc reads it at
/// start, and an operator's own choice wins). Call once, before the caches fill.
pub fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets a parameter of the allocator, under the allocator's lock.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if set != 1 {
            tracing::debug!("glibc refused the mmap threshold; it moves as glibc decides");
        }
    }
}
