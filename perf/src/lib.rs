//! braid's on-box benchmarks. A benchmark reports figures (JSON on stdout);
//! it asserts nothing. `scripts/bench` runs them and keeps results in
//! `perf/results/`.
