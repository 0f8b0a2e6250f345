//! What one `/metrics` scrape costs at fleet scale: 10,000 tenants and 20,000 subscriptions in
//! the caches, with the statuses the engine gives them, every per-object series exported
//! (`mailsec_tenant_phase`, the expiration timestamps). `cargo bench --bench scrape` prints the
//! text's size and the heap a scrape holds at its peak on top of the caches (counted by the
//! allocator: the same on every machine), written whole and streamed as `/metrics` sends it
//! (each chunk dropped once handed on), then times a scrape. Before and after a change,
//! compare the printed peaks, and the texts (`SCRAPE_TEXT=<file>` writes the text there; the
//! fleet's dates are relative to the day of the run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use kube::runtime::{reflector, watcher};
use mailsec_operator::engine::{Policy, World, evaluate_world};
use mailsec_operator::fixtures::{ESG, ETDR, subscription, tenant};
use mailsec_operator::metrics::{CachesSynced, Metrics, SCRAPE_CHUNK, ScrapeFormat};

/// The system allocator, keeping the bytes in use and their highest level.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Synced;

impl CachesSynced for Synced {
    fn is_synced(&self) -> bool {
        true
    }
}

/// Tenants with two services and subscriptions in every phase, as the load harness creates.
fn fleet(n: usize) -> World {
    let now = Utc::now();
    let day = |days: i64| (now + TimeDelta::days(days)).format("%Y-%m-%d").to_string();
    let dates = |k: usize| match k % 5 {
        0 => (day(10), day(400)),
        1 => (day(-100), day(365)),
        2 => (day(-100), day(10)),
        3 => (day(-400), day(-10)),
        _ => (day(-400), day(-60)),
    };
    let mut world = World::default();
    for i in 0..n {
        let name = format!("t-{i:05}");
        world.tenants.push(tenant(&name, &[ESG, ETDR], 10));
        for (product, k) in [(ESG, i), (ETDR, i / 3)] {
            let (start, end) = dates(k);
            let sub_name = format!("{name}-{product}");
            world
                .subscriptions
                .push(subscription(&sub_name, &name, product, &start, &end, 50));
        }
    }
    world
}

/// Bytes held at the peak of `f`, above what was held when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = IN_USE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - start)
}

fn scrape(c: &mut Criterion) {
    let policy = Policy::default();
    let mut world = fleet(10_000);
    let eval = evaluate_world(&world, &policy, Utc::now());
    for (t, e) in world.tenants.iter_mut().zip(eval.tenants) {
        t.status = Some(e.status);
    }
    for (s, e) in world.subscriptions.iter_mut().zip(eval.subscriptions) {
        s.status = Some(e.status);
    }
    let (tenants, mut tenant_writer) = reflector::store();
    for t in world.tenants {
        tenant_writer.apply_watcher_event(&watcher::Event::Apply(t));
    }
    let (subscriptions, mut subscription_writer) = reflector::store();
    for s in world.subscriptions {
        subscription_writer.apply_watcher_event(&watcher::Event::Apply(s));
    }
    let metrics = Metrics::new(None);
    metrics.attach_caches(tenants, subscriptions, Synced, policy);
    let (text, peak) = peak_of(|| metrics.encode_text().expect("encodes"));
    if let Some(path) = std::env::var_os("SCRAPE_TEXT") {
        std::fs::write(path, &text).expect("text written");
    }
    println!(
        "whole text: {} bytes; heap held at the peak {} bytes ({:.2} × the text)",
        text.len(),
        peak,
        peak as f64 / text.len().max(1) as f64
    );
    let streamed = |metrics: &Metrics| {
        let mut sent = 0;
        metrics
            .encode_chunked(ScrapeFormat::Prometheus, |chunk| {
                sent += black_box(chunk).len();
                true
            })
            .expect("encodes");
        sent
    };
    let (sent, peak) = peak_of(|| streamed(&metrics));
    println!(
        "streamed: {sent} bytes in chunks of {SCRAPE_CHUNK}; heap held at the peak {peak} bytes ({:.3} × the text)",
        peak as f64 / sent.max(1) as f64
    );
    c.bench_function("scrape/30,000 objects, whole text", |b| {
        b.iter(|| black_box(metrics.encode_text()))
    });
    c.bench_function("scrape/30,000 objects, streamed", |b| {
        b.iter(|| black_box(streamed(&metrics)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = scrape
}
criterion_main!(benches);
