//! Shared set-up for the EAL tests: see `braid_dpdk::testing`.

#![allow(dead_code)]

use std::sync::MutexGuard;

use braid_dpdk::Eal;

pub fn eal(vdevs: &[&str]) -> (&'static Eal, MutexGuard<'static, ()>) {
    braid_dpdk::testing::eal(vdevs, 512)
}
