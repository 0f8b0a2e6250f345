//! What the operator pays to read one object from its watches: a Tenant and a Subscription as
//! the API server sends them (with `managedFields`; captured with `kubectl get tenant acme -o
//! json --show-managed-fields` after `scripts/run-local.sh`, written compactly as a watch event
//! carries them). The baseline in the same run is a plain decode of the whole object, as the
//! operator did before it skipped `managedFields`: `cargo bench --bench decode`. Allocations
//! per decode are counted once and printed (they do not depend on the machine).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use mailsec_operator::api::{Subscription, Tenant};
use mailsec_operator::controller::lenient::Lenient;
use serde::de::DeserializeOwned;

/// The system allocator, counting allocations and the bytes they ask for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations and bytes asked by one call of `f`.
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, u64) {
    let (a, b) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    drop(black_box(f()));
    (
        ALLOCATIONS.load(Ordering::Relaxed) - a,
        BYTES.load(Ordering::Relaxed) - b,
    )
}

/// A captured object, compact as the API server writes it.
fn compact(pretty: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(pretty).expect("captured JSON");
    value.to_string()
}

fn bench_kind<K: DeserializeOwned>(c: &mut Criterion, name: &str, text: &str) {
    let whole = || serde_json::from_str::<K>(text).expect("decodes");
    let lenient = || match Lenient::<K>::decode(text) {
        Lenient::Good(k) => k,
        Lenient::Bad(bad) => panic!("{}", bad.error),
    };
    let (before, now) = (allocations(whole), allocations(lenient));
    println!(
        "{name}: {} bytes of JSON; allocations per decode: whole {} ({} bytes), without managedFields {} ({} bytes)",
        text.len(),
        before.0,
        before.1,
        now.0,
        now.1
    );
    let mut group = c.benchmark_group(format!("decode_watched/{name}"));
    group.bench_function("whole object (baseline)", |b| b.iter(|| black_box(whole())));
    group.bench_function("without managedFields", |b| b.iter(|| black_box(lenient())));
    group.finish();
}

fn decode(c: &mut Criterion) {
    let tenant = compact(include_str!("data/watched-tenant.json"));
    let subscription = compact(include_str!("data/watched-subscription.json"));
    bench_kind::<Tenant>(c, "tenant", &tenant);
    bench_kind::<Subscription>(c, "subscription", &subscription);
}

criterion_group!(benches, decode);
criterion_main!(benches);
