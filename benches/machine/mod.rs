//! What the Rust benches share: their knobs and the machine's load from `/proc`.
//! (A folder, so that Cargo does not take it for a bench of its own.)
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// The whole number in environment variable `name`, or `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected a whole number")),
        Err(_) => default,
    }
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Busy ticks of the whole machine so far (user, nice, system, irq, softirq, steal).
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6] + cpu[7]
}

/// The machine's cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The whole machine's CPU over 2 s, in % of one core (`cores() * 100` at most).
pub fn machine_load(tck: f64) -> f64 {
    let (b0, t0) = (machine_busy_ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (b1, t1) = (machine_busy_ticks(), Instant::now());
    (b1 - b0) as f64 / tck / (t1 - t0).as_secs_f64() * 100.0
}
