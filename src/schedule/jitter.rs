//! The per-job jitter: a delay derived from the job's identity alone.
//!
//! The hash is written out here (FNV-1a 64, then the MurmurHash3 finaliser
//! to spread FNV's weak low bits) rather than taken from std, whose
//! `DefaultHasher` may change between Rust versions and whose `RandomState`
//! changes at every start: a job must keep its delay across restarts,
//! upgrades and machines of a fleet.

use std::time::Duration;

/// A delay in `[0, max)`, to the millisecond, that depends only on `job_id`
/// (the job file's path relative to the jobs folder): the same job always
/// gets the same delay, and different jobs spread evenly over the range.
/// A `max` under one millisecond gives zero.
pub fn stable_jitter(job_id: &str, max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    // Multiply-shift maps the hash onto [0, max_ms) without modulo bias
    // worth speaking of, using the hash's best-mixed high bits.
    let ms = (u128::from(mix(fnv1a64(job_id.as_bytes()))) * u128::from(max_ms)) >> 64;
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_values() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_same_job_always_gets_the_same_delay() {
        let max = Duration::from_secs(30);
        let first = stable_jitter("backups/nightly.toml", max);
        for _ in 0..10 {
            assert_eq!(stable_jitter("backups/nightly.toml", max), first);
        }
        // Pinned, so a change of hash (which would move every job) is noticed.
        assert_eq!(first, PINNED_NIGHTLY);
    }

    #[test]
    fn delays_stay_below_max_at_millisecond_resolution() {
        for max_ms in [1, 2, 7, 1000, 30_000, 86_400_000] {
            let max = Duration::from_millis(max_ms);
            for i in 0..500 {
                let d = stable_jitter(&format!("job-{i}.toml"), max);
                assert!(d < max, "{d:?} >= {max:?}");
                assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{d:?} is not whole milliseconds");
            }
        }
        // Under a millisecond there is no room for a delay.
        assert_eq!(stable_jitter("a.toml", Duration::from_micros(999)), Duration::ZERO);
    }

    #[test]
    fn zero_max_gives_zero() {
        assert_eq!(stable_jitter("a.toml", Duration::ZERO), Duration::ZERO);
        assert_eq!(stable_jitter("", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn different_jobs_spread_over_the_range() {
        let max = Duration::from_secs(10);
        let mut buckets = [0usize; 10];
        for i in 0..1000 {
            let d = stable_jitter(&format!("jobs/job-{i}.toml"), max);
            buckets[d.as_secs() as usize] += 1;
        }
        // Every tenth of the range is used, and none is crowded.
        assert!(buckets.iter().all(|&n| (50..=150).contains(&n)), "{buckets:?}");
    }

    #[test]
    fn near_identical_names_get_different_delays() {
        let max = Duration::from_secs(60);
        assert_ne!(stable_jitter("a.toml", max), stable_jitter("b.toml", max));
        assert_ne!(stable_jitter("job1.toml", max), stable_jitter("job2.toml", max));
    }

    /// `stable_jitter("backups/nightly.toml", 30 s)`.
    const PINNED_NIGHTLY: Duration = Duration::from_millis(12_697);
}
