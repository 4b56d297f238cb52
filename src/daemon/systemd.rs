//! Talking to systemd (`Type=notify`): READY, STATUS, WATCHDOG, STOPPING,
//! RELOADING. Every call is a no-op when `NOTIFY_SOCKET` is unset, so the
//! daemon runs the same in a terminal.

use std::time::Duration;

use sd_notify::NotifyState;

/// The service manager's side, as far as gatherd needs it.
#[derive(Debug, Clone, Copy)]
pub struct Systemd;

impl Systemd {
    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!("cannot notify systemd: {e}");
        }
    }

    /// The first scan is loaded; jobs run.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A one-line status for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Still alive (the watchdog).
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping: letting runs in flight finish")]);
    }

    /// Reloading (SIGHUP); [`Systemd::ready`] follows when done.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, when it is set
    /// for us. As libsystemd's `sd_watchdog_enabled`: a `WATCHDOG_PID` naming
    /// another process means the watchdog is not ours; no `WATCHDOG_PID` means
    /// it is.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
    }
}
