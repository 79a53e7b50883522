//! Shared pieces of the benchmarks: latency statistics and a Zipf sampler.

use std::time::Duration;

use rand::Rng;

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Operations per second.
    pub per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Summarizes `latencies` (any order) measured over `elapsed`.
pub fn stats(latencies: &mut [Duration], elapsed: Duration) -> Stats {
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Stats {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// Picks indexes `0..n` uniformly or with a Zipf distribution (`s`), rank 0 the most likely.
#[derive(Debug, Clone)]
pub enum Picker {
    /// Every index equally likely.
    Uniform(usize),
    /// Cumulative Zipf weights.
    Zipf(Vec<f64>),
}

impl Picker {
    /// A Zipf picker over `n` indexes with exponent `s`.
    #[must_use]
    pub fn zipf(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self::Zipf(cdf)
    }

    /// The next index.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        match self {
            Self::Uniform(n) => rng.random_range(0..*n),
            Self::Zipf(cdf) => {
                let x: f64 = rng.random();
                cdf.partition_point(|c| *c < x).min(cdf.len() - 1)
            }
        }
    }
}

/// A duration as microseconds with one decimal.
#[must_use]
pub fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}
