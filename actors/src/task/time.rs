//! Times as the API and the stores write them: RFC 3339 in UTC, exactly as chrono's serde
//! writes them (`2026-11-26T23:23:11.123Z`: a fraction only when there is one, in 3, 6 or 9
//! digits), but written straight into a buffer rather than through `fmt`. A task carries three
//! and is encoded at each of its changes, on the manager and on its node: through chrono's
//! `Display` the times were a measurable share of encoding a task.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// Writes `time` as chrono's serde does (`None` as null).
pub(super) fn serialize<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let Some(time) = time else {
        return serializer.serialize_none();
    };
    let mut buf = [0u8; 32];
    match write(time, &mut buf) {
        Some(len) => {
            let text = std::str::from_utf8(&buf[..len]).expect("only ASCII digits and marks");
            serializer.serialize_some(text)
        }
        // Years outside 0-9999 and leap seconds: chrono's own writing.
        None => Some(time).serialize(serializer),
    }
}

/// Writes `time` into `buf`; its length, or `None` for what only chrono writes.
fn write(time: &DateTime<Utc>, buf: &mut [u8; 32]) -> Option<usize> {
    let year = u32::try_from(time.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    digits(&mut buf[0..4], year);
    buf[4] = b'-';
    digits(&mut buf[5..7], time.month());
    buf[7] = b'-';
    digits(&mut buf[8..10], time.day());
    buf[10] = b'T';
    digits(&mut buf[11..13], time.hour());
    buf[13] = b':';
    digits(&mut buf[14..16], time.minute());
    buf[16] = b':';
    digits(&mut buf[17..19], time.second());
    let mut len = 19;
    if nanos != 0 {
        let (fraction, width) = if nanos.is_multiple_of(1_000_000) {
            (nanos / 1_000_000, 3)
        } else if nanos.is_multiple_of(1_000) {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        buf[len] = b'.';
        digits(&mut buf[len + 1..len + 1 + width], fraction);
        len += 1 + width;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// Writes `n` in decimal, zero-padded to the width of `out`.
fn digits(out: &mut [u8], mut n: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Serialize)]
    struct Ours(#[serde(serialize_with = "serialize")] Option<DateTime<Utc>>);

    fn both(time: Option<DateTime<Utc>>) -> (String, String) {
        (
            serde_json::to_string(&Ours(time)).unwrap(),
            serde_json::to_string(&time).unwrap(),
        )
    }

    /// The edges: no time, whole seconds, each fraction width, the first and last years
    /// written here, and years only chrono writes.
    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let at = |secs: i64, nanos: u32| DateTime::from_timestamp(secs, nanos);
        for time in [
            None,
            at(0, 0),
            at(1_795_000_000, 0),
            at(1_795_000_000, 120_000_000),
            at(1_795_000_000, 123_456_000),
            at(1_795_000_000, 123_456_789),
            at(1_795_000_000, 1),
            at(-62_167_219_200, 0),
            at(253_402_300_799, 999_999_999),
            at(253_402_300_800, 0),
            at(-62_167_219_201, 5_000_000),
        ] {
            let (ours, chrono) = both(time);
            assert_eq!(ours, chrono);
        }
    }

    proptest! {
        /// Any time, at any fraction, reads the same as chrono writes it.
        #[test]
        fn any_time_is_written_as_chrono_writes_it(
            secs in -70_000_000_000i64..300_000_000_000,
            nanos in 0u32..1_000_000_000,
            round in 0usize..3,
        ) {
            let nanos = [nanos, nanos / 1_000 * 1_000, nanos / 1_000_000 * 1_000_000][round];
            let time = DateTime::from_timestamp(secs, nanos);
            let (ours, chrono) = both(time);
            prop_assert_eq!(ours, chrono);
        }
    }
}
