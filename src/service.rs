//! Talking to the service manager (systemd's `Type=notify`): readiness, stopping, and the
//! watchdog. Each call does nothing when the process was not started by a service manager
//! (no `NOTIFY_SOCKET`), so the demo and the tests run the same code.
//!
//! What "alive" means is each program's decision, made where it serves: the ledger feeds
//! the watchdog while its database answers, the terminal while its main loop turns and its
//! journal answers. A process that stops feeding it is killed and started again by systemd
//! (`WatchdogSec=` and `Restart=` in the units under `systemd/`).

use std::time::Duration;

/// Feeds per watchdog period: systemd's advice is to notify at half the period at least;
/// a third leaves room for one slow health check.
const FEEDS_PER_PERIOD: u32 = 3;

/// The shortest interval between two feeds, whatever the period says.
const FEED_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// Tells the service manager that the program serves (`READY=1`), with a status line.
pub fn ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager that the program is stopping (`STOPPING=1`).
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// Feeds the watchdog (`WATCHDOG=1`).
pub fn feed_watchdog() {
    send(&[sd_notify::NotifyState::Watchdog]);
}

/// How often to check health and feed the watchdog; `None` when no watchdog is set
/// (`WatchdogSec=` absent, or meant for another process).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(feed_interval)
}

/// The feeding interval for a watchdog period.
fn feed_interval(period: Duration) -> Duration {
    (period / FEEDS_PER_PERIOD).max(FEED_INTERVAL_MIN)
}

fn send(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        // Not fatal: systemd restarts a service whose watchdog starves, which says more.
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_three_times_a_period_and_never_in_a_busy_loop() {
        assert_eq!(
            feed_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(feed_interval(Duration::from_micros(1)), FEED_INTERVAL_MIN);
    }
}
