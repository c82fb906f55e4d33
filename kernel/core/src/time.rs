//! Time arithmetic: counter frequencies, calibration and tick/nanosecond conversion.
//!
//! The hardware layer reads counters (TSC, LAPIC timer, PIT, the aarch64 generic timer); this
//! module turns readings into frequencies and durations without overflow or division by zero.

/// Nanoseconds per second.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Frequency in Hz of a counter that advanced `counted` units while a reference counter of
/// frequency `reference_hz` advanced `reference_ticks` units. `None` if nothing was measured.
pub fn calibrate(counted: u64, reference_ticks: u64, reference_hz: u64) -> Option<u64> {
    if reference_ticks == 0 || reference_hz == 0 {
        return None;
    }
    let hz = (counted as u128 * reference_hz as u128) / reference_ticks as u128;
    u64::try_from(hz).ok().filter(|&hz| hz > 0)
}

/// Converts `ticks` of a counter running at `hz` into nanoseconds, saturating.
pub fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    let ns = ticks as u128 * NANOS_PER_SEC as u128 / hz as u128;
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Converts `ns` nanoseconds into ticks of a counter running at `hz`, saturating.
pub fn ns_to_ticks(ns: u64, hz: u64) -> u64 {
    let ticks = ns as u128 * hz as u128 / NANOS_PER_SEC as u128;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Converts counter ticks to nanoseconds with one multiplication, for the paths every system
/// call takes: `ns = ticks * mult >> 32`, where `mult` is `10^9 * 2^32 / hz` rounded. The
/// result is monotonic in `ticks` and within `ticks / 2^32 + 1` ns of the exact value (about
/// 2 us after an hour of a 2.6 GHz TSC); [`ticks_to_ns`] stays the exact, slower reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickScale {
    mult: u64,
}

impl TickScale {
    /// The scale for a counter of `hz` (at least 1 Hz; slower counters saturate).
    pub fn new(hz: u64) -> Self {
        let mult = ((NANOS_PER_SEC as u128) << 32).div_ceil(hz.max(1) as u128);
        Self {
            mult: u64::try_from(mult).unwrap_or(u64::MAX),
        }
    }

    /// The multiplier, to keep in an atomic and rebuild with [`from_mult`](Self::from_mult).
    pub fn mult(self) -> u64 {
        self.mult
    }

    /// A scale from a stored multiplier.
    pub fn from_mult(mult: u64) -> Self {
        Self { mult }
    }

    /// `ticks` in nanoseconds, saturating.
    pub fn ns(self, ticks: u64) -> u64 {
        u64::try_from((ticks as u128 * self.mult as u128) >> 32).unwrap_or(u64::MAX)
    }
}

/// A frequency printed with a readable unit: `1.000 GHz`, `62.500 MHz`, `1.193 MHz`, `100 Hz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hz(pub u64);

impl core::fmt::Display for Hz {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let hz = self.0;
        let (unit, scale) = match hz {
            1_000_000_000.. => ("GHz", 1_000_000_000),
            1_000_000.. => ("MHz", 1_000_000),
            1_000.. => ("kHz", 1_000),
            _ => return write!(f, "{hz} Hz"),
        };
        write!(
            f,
            "{}.{:03} {unit}",
            hz / scale,
            (hz % scale) / (scale / 1000)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn calibration() {
        // 10 ms of the 1.193182 MHz PIT is 11932 ticks; a 2 GHz TSC counts 20 million meanwhile.
        let hz = calibrate(20_000_000, 11_932, 1_193_182).unwrap();
        assert!((1_999_000_000..2_001_000_000).contains(&hz), "{hz}");
        assert_eq!(calibrate(5, 0, 1_193_182), None);
        assert_eq!(calibrate(0, 10, 1_193_182), None);
        assert_eq!(
            calibrate(u64::MAX, 1, u64::MAX),
            None,
            "overflow is reported, not wrapped"
        );
    }

    #[test]
    fn conversions() {
        assert_eq!(ticks_to_ns(62_500_000, 62_500_000), NANOS_PER_SEC);
        assert_eq!(ns_to_ticks(1_000_000, 62_500_000), 62_500);
        assert_eq!(ticks_to_ns(1, 0), 0);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
        assert_eq!(ns_to_ticks(u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn tick_scale_is_close_to_exact_and_monotonic() {
        for hz in [
            62_500_000u64,
            1_000_000_000,
            2_597_000_000,
            1_193_182,
            24_000_000,
        ] {
            let scale = TickScale::new(hz);
            let mut last = 0;
            for ticks in [
                0u64,
                1,
                999,
                hz,
                hz * 3 + 17,
                hz * 3600,
                u64::MAX / 1_000_000,
            ] {
                let exact = ticks_to_ns(ticks, hz);
                let fast = scale.ns(ticks);
                assert!(
                    fast.abs_diff(exact) <= ticks / (1 << 32) + 1,
                    "{hz} Hz, {ticks}: {fast} vs {exact}"
                );
                assert!(fast >= last);
                last = fast;
            }
            assert_eq!(TickScale::from_mult(scale.mult()), scale);
        }
        assert_eq!(
            TickScale::new(62_500_000).ns(u64::MAX),
            u64::MAX,
            "saturates, not wraps"
        );
    }

    #[test]
    fn display() {
        assert_eq!(Hz(1_000_000_000).to_string(), "1.000 GHz");
        assert_eq!(Hz(62_500_000).to_string(), "62.500 MHz");
        assert_eq!(Hz(1_193_182).to_string(), "1.193 MHz");
        assert_eq!(Hz(24_000).to_string(), "24.000 kHz");
        assert_eq!(Hz(100).to_string(), "100 Hz");
    }
}
