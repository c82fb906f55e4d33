//! The I/O server's main loop, over the few kernel services it needs ([`Kernel`]), so that it
//! is the same for every class and testable on the host.
//!
//! Awake, the server runs passes until one does nothing, with the real device's interrupts
//! suppressed (a completion costs no interrupt, no acknowledgement, no wake-up). With requests
//! on the device and nothing else to do it polls a while (`poll_ns`) before sleeping. Before
//! sleeping it asks for the device's interrupt again and re-checks (work that arrived in
//! between is served, not slept on); then it waits for any notification bit: client kicks and
//! the device's interrupt alike. A held request waiting for rate credit sleeps until the
//! credit returns; a device whose interrupt does not reach the server is polled.
//! Between passes it reports each client's state changes and, periodically, changed counters.

use core::fmt::{self, Write};

use virtio::transport::shmem::Notifier;

use crate::client::{ClientState, MAX_CLIENTS};
use crate::server::{DeviceClass, Progress, Server};

/// What the loop needs of the kernel.
pub trait Kernel {
    /// Monotonic time in nanoseconds.
    fn now_ns(&self) -> u64;
    /// Waits for any notification bit and takes them; 0 if the wait failed.
    fn wait(&mut self) -> u64;
    /// Takes the notification bits pending now.
    fn poll(&mut self) -> u64;
    /// Sleeps until `at_ns`.
    fn sleep_until(&mut self, at_ns: u64);
    /// Acknowledges the device's interrupt bits `bits` at the kernel.
    fn ack_device(&mut self, bits: u64);
    /// Writes a line to the partition's log.
    fn log(&mut self, line: fmt::Arguments<'_>);
}

/// How the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSettings {
    /// The device's interrupt reaches the server (else it is polled).
    pub interrupts: bool,
    /// The notification bits of the device's interrupt.
    pub irq_bits: u64,
    /// How long to poll the device for completions before sleeping (0: sleep at once).
    pub poll_ns: u64,
    /// Sleep between polls when the device's interrupt does not reach the server.
    pub poll_period_ns: u64,
    /// Period of the per-client counter report (0: never).
    pub report_ns: u64,
}

/// Shortest and longest sleep for rate credit.
const CREDIT_SLEEP_NS: (u64, u64) = (100_000, 20_000_000);

/// The loop's memory between iterations: the last states and counters reported.
pub struct Serving<'n, C: DeviceClass> {
    names: [&'n str; MAX_CLIENTS],
    settings: LoopSettings,
    states: [Option<ClientState<C::Reason>>; MAX_CLIENTS],
    /// The class's counters of each client when last reported.
    reported: [C::Stats; MAX_CLIENTS],
    next_report: u64,
}

impl<C: DeviceClass> fmt::Debug for Serving<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serving")
            .field("names", &self.names)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<'n, C: DeviceClass> Serving<'n, C> {
    /// A loop for clients named `names` (by index), started at `now_ns`.
    pub fn new(names: [&'n str; MAX_CLIENTS], settings: LoopSettings, now_ns: u64) -> Self {
        Self {
            names,
            settings,
            states: [None; MAX_CLIENTS],
            reported: [C::Stats::default(); MAX_CLIENTS],
            next_report: now_ns.saturating_add(settings.report_ns),
        }
    }

    /// Serves forever; `after_pass` runs after every pass (a class's own checks and reports).
    pub fn run<'s, N: Notifier, K: Kernel>(
        &mut self,
        server: &mut Server<'s, N, C>,
        kernel: &mut K,
        mut after_pass: impl FnMut(&mut Server<'s, N, C>, &mut K),
    ) -> ! {
        loop {
            self.step(server, kernel, &mut after_pass);
        }
    }

    /// One iteration: passes until idle, reports, then sleep until there is work.
    pub fn step<'s, N: Notifier, K: Kernel>(
        &mut self,
        server: &mut Server<'s, N, C>,
        kernel: &mut K,
        after_pass: &mut impl FnMut(&mut Server<'s, N, C>, &mut K),
    ) {
        let progress = self.serve_until_idle(server, kernel, after_pass);
        self.report(server, kernel);
        if self.settings.interrupts && server.class().device().request_interrupt() {
            // Work arrived between the last pass and the request: serve it now.
            return;
        }
        let now = kernel.now_ns();
        let bits = if let Some(at) = progress.wake_at {
            // A request waits for rate credit: sleep until it returns, then look at every bit.
            let (shortest, longest) = CREDIT_SLEEP_NS;
            kernel.sleep_until(at.clamp(now + shortest, now + longest));
            kernel.poll()
        } else if !self.settings.interrupts && server.class_ref().in_flight() > 0 {
            kernel.sleep_until(now + self.settings.poll_period_ns);
            kernel.poll()
        } else {
            // Every bit: client kicks and the device's interrupts. Whatever woke us, the next
            // pass looks at every channel and at the device.
            kernel.wait()
        };
        if bits & self.settings.irq_bits != 0 {
            server.class().device().ack_interrupt();
            kernel.ack_device(bits & self.settings.irq_bits);
        }
    }

    /// Runs passes until one does nothing (polling a while for requests on the device);
    /// what they did together.
    fn serve_until_idle<'s, N: Notifier, K: Kernel>(
        &mut self,
        server: &mut Server<'s, N, C>,
        kernel: &mut K,
        after_pass: &mut impl FnMut(&mut Server<'s, N, C>, &mut K),
    ) -> Progress {
        server.class().device().suppress_interrupts();
        let mut total = Progress::default();
        // Whether to sleep as soon as a pass does nothing: a client got a used buffer (it has
        // work now, and runs once we sleep), or we polled already since the last wake-up.
        let mut sleep_when_idle = self.settings.poll_ns == 0;
        loop {
            let pass = server.run_once(kernel.now_ns());
            total.merge(pass);
            after_pass(server, kernel);
            sleep_when_idle |= pass.completed;
            if pass.busy {
                continue;
            }
            if sleep_when_idle || server.class_ref().in_flight() == 0 {
                return total;
            }
            // Requests on the device and no client has anything to do yet: poll a while for
            // the completion instead of sleeping until its interrupt.
            let until = kernel.now_ns().saturating_add(self.settings.poll_ns);
            loop {
                let pass = server.run_once(kernel.now_ns());
                total.merge(pass);
                if pass.busy || server.class_ref().in_flight() == 0 || kernel.now_ns() >= until {
                    break;
                }
            }
            sleep_when_idle = true;
        }
    }

    /// Reports state changes, and counters that changed once a period is over.
    fn report<N: Notifier, K: Kernel>(&mut self, server: &Server<'_, N, C>, kernel: &mut K) {
        for (index, last) in self.states.iter_mut().enumerate() {
            let now = server.client_state(index);
            if now == *last {
                continue;
            }
            let name = self.names[index];
            // A client's first state is news only if it is not the initial Idle.
            let first = last.is_none();
            *last = now;
            match now {
                Some(ClientState::Serving) => kernel.log(format_args!("{name}: serving")),
                Some(ClientState::Idle) if !first => {
                    kernel.log(format_args!("{name}: reset by the client"))
                }
                Some(ClientState::Broken(why)) => {
                    let breaks = server.client_stats(index).map_or(0, |s| s.breaks);
                    kernel.log(format_args!(
                        "{name}: stopped until it resets: {why:?} (break {breaks})"
                    ))
                }
                _ => {}
            }
        }
        let now = kernel.now_ns();
        if self.settings.report_ns == 0 || now < self.next_report {
            return;
        }
        self.next_report = now.saturating_add(self.settings.report_ns);
        for (index, last) in self.reported.iter_mut().enumerate() {
            let Some(stats) = server.client_stats(index) else {
                continue;
            };
            // Only the class's counters: resets and breaks are news in the state lines.
            if *last == stats.class {
                continue;
            }
            *last = stats.class;
            let mut line = Line::default();
            if C::report(&stats, &mut line).is_ok() && !line.as_str().is_empty() {
                kernel.log(format_args!("{}: {}", self.names[index], line.as_str()));
            }
        }
    }
}

/// A log line, formatted without an allocator (longer text is cut).
pub struct Line {
    bytes: [u8; 192],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            bytes: [0; 192],
            len: 0,
        }
    }
}

impl Line {
    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self
            .len
            .checked_add(s.len())
            .filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(fmt::Error)?;
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}
