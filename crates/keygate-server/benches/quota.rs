//! The cost of a quota decision in memory (no store): what `/verify` pays for a client with
//! a quota, against the same request for a client without one. Run with
//! `cargo bench -p keygate-server --bench quota`; numbers go in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate_server::quota::{Quotas, RateLimit};

fn quota(c: &mut Criterion) {
    // Never reached during the run: every decision is an allowed one, the common case.
    let limit: RateLimit = "3000000000/1h".parse().unwrap();
    let mut g = c.benchmark_group("quota");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("gcra_decide", |b| {
        let gcra = limit.gcra();
        let mut tat = None;
        let mut now = 0u64;
        b.iter(|| {
            now += 1;
            let (outcome, new) = gcra.decide(black_box(tat), now);
            tat = new.or(tat);
            outcome
        });
    });
    g.bench_function("charge_locally_one_of_1000_clients", |b| {
        let quotas = Quotas::new(None);
        let ids: Vec<String> = (0..1000).map(|i| format!("client-{i}")).collect();
        for id in &ids {
            quotas.charge_locally(id, limit, ids.len());
        }
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            quotas.charge_locally(black_box(&ids[i]), limit, ids.len())
        });
    });
    g.finish();
}

criterion_group!(benches, quota);
criterion_main!(benches);
