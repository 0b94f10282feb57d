//! [`GoDuration`]: every duration kpki reads (settings, flags, kubeadm documents) in one
//! grammar, Go's `time.ParseDuration` (what kubeadm's `metav1.Duration` fields accept):
//! `8760h`, `87600h0m0s`, `1h30m`, `2160.5h`, `.5h`, `1.5h30m`, `300ms`, `0`; units `ns`,
//! `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`; an optional sign. kpki's own settings and flags
//! also take `d` (24h): `30d`. kubeadm documents do not ([`GoDuration::parse_kubeadm`]): Go
//! has no such unit, and kubeadm refuses them. Fractions are computed as Go does
//! (nanoseconds, truncated), and values beyond Go's int64 nanoseconds are refused.
//! Negative durations are valid Go but never a valid period here, so they are refused.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The largest magnitude Go's `Duration` (int64 nanoseconds) can hold, plus one (`1<<63`).
const LIMIT: u64 = 1 << 63;

/// A duration read from text in the grammar of the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

/// A duration that does not parse: the text and why, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {why} (Go duration such as 8760h, 2160.5h or 1h30m)")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

impl GoDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses `text` as kubeadm does: Go's grammar, without kpki's `d` unit.
    pub(crate) fn parse_kubeadm(text: &str) -> Result<GoDuration, DurationError> {
        parse(text, false).map(GoDuration)
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<GoDuration, DurationError> {
        parse(text, true).map(GoDuration)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Duration {
        d.0
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<GoDuration, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn unit_nanos(unit: &str, days: bool) -> Option<u64> {
    Some(match unit {
        "d" if days => 24 * 3600 * 1_000_000_000,
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration string as `time.ParseDuration` does (with the `d` unit when `days`);
/// refuses negative values.
fn parse(text: &str, days: bool) -> Result<Duration, DurationError> {
    let bad = |why: &'static str| DurationError {
        text: text.to_string(),
        why,
    };
    let mut s = text;
    let mut negative = false;
    if let Some(c) = s.chars().next().filter(|c| *c == '-' || *c == '+') {
        negative = c == '-';
        s = &s[1..];
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(bad("expected a number"));
        }
        // Integer part.
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for c in &b[..digits] {
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .filter(|v| *v <= LIMIT)
                .ok_or_else(|| bad("overflow"))?;
        }
        s = &s[digits..];
        // Fraction: digits kept while they fit, like Go's leadingFraction.
        let (mut fraction, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let fb = rest.as_bytes();
            let n = fb.iter().take_while(|c| c.is_ascii_digit()).count();
            post = n > 0;
            let mut overflow = false;
            for c in &fb[..n] {
                if overflow {
                    continue;
                }
                if fraction > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = fraction * 10 + u64::from(c - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                fraction = y;
                scale *= 10.0;
            }
            s = &rest[n..];
        }
        if digits == 0 && !post {
            return Err(bad("expected digits"));
        }
        let unit_len = s
            .bytes()
            .position(|c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(bad("missing unit"));
        }
        let unit = unit_nanos(&s[..unit_len], days).ok_or_else(|| bad("unknown unit"))?;
        s = &s[unit_len..];
        if whole > LIMIT / unit {
            return Err(bad("overflow"));
        }
        let mut v = whole * unit;
        if fraction > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale)), truncating.
            let add = (fraction as f64 * (unit as f64 / scale)) as u64;
            v = v
                .checked_add(add)
                .filter(|v| *v <= LIMIT)
                .ok_or_else(|| bad("overflow"))?;
        }
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or_else(|| bad("overflow"))?;
    }
    if negative && total > 0 {
        return Err(bad("negative"));
    }
    if total > LIMIT - 1 {
        return Err(bad("overflow"));
    }
    Ok(Duration::from_nanos(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    /// Text, then the duration in both grammars (`None`: refused).
    const ROWS: &[(&str, Option<Duration>)] = &[
        ("8760h", Some(Duration::from_secs(8760 * H))),
        ("87600h0m0s", Some(Duration::from_secs(87600 * H))),
        ("1h30m", Some(Duration::from_secs(5400))),
        ("2160.5h", Some(Duration::from_secs(2160 * H + 1800))),
        ("1.5h", Some(Duration::from_secs(5400))),
        (".5h", Some(Duration::from_secs(1800))),
        ("5.h", Some(Duration::from_secs(5 * H))),
        ("1.5h30m", Some(Duration::from_secs(2 * H))),
        ("+2h", Some(Duration::from_secs(2 * H))),
        ("0", Some(Duration::ZERO)),
        ("-0", Some(Duration::ZERO)),
        ("0s", Some(Duration::ZERO)),
        ("90s", Some(Duration::from_secs(90))),
        ("300ms", Some(Duration::from_millis(300))),
        ("1us", Some(Duration::from_micros(1))),
        ("1\u{b5}s", Some(Duration::from_micros(1))),
        ("1\u{3bc}s", Some(Duration::from_micros(1))),
        ("7ns", Some(Duration::from_nanos(7))),
        ("1.000000001s", Some(Duration::from_nanos(1_000_000_001))),
        (
            "2562047h47m16.854775807s",
            Some(Duration::from_nanos((1 << 63) - 1)),
        ),
        ("", None),
        ("h", None),
        ("10", None),
        ("-1h", None),
        ("1h-2m", None),
        (".h", None),
        (".", None),
        ("1..5h", None),
        (" 1h", None),
        ("1h ", None),
        ("1H", None),
        ("1D", None),
        ("1y", None),
        ("2562047h47m16.854775808s", None),
        ("9999999999999999999h", None),
        ("+", None),
        ("-", None),
    ];

    /// Texts only kpki's grammar reads (`d` = 24h), with their duration.
    const DAYS: &[(&str, Duration)] = &[
        ("30d", Duration::from_secs(30 * 24 * H)),
        ("400d", Duration::from_secs(400 * 24 * H)),
        ("1.5d", Duration::from_secs(36 * H)),
        ("1d12h", Duration::from_secs(36 * H)),
        ("0d", Duration::ZERO),
    ];

    #[test]
    fn parses_like_go() {
        for (text, want) in ROWS {
            let kpki = text.parse::<GoDuration>().ok().map(GoDuration::get);
            let kubeadm = GoDuration::parse_kubeadm(text).ok().map(GoDuration::get);
            assert_eq!(kpki, *want, "{text}");
            assert_eq!(kubeadm, *want, "{text} (kubeadm)");
        }
    }

    #[test]
    fn days_only_in_kpki_settings() {
        for (text, want) in DAYS {
            assert_eq!(
                text.parse::<GoDuration>().map(GoDuration::get),
                Ok(*want),
                "{text}"
            );
            let e = GoDuration::parse_kubeadm(text).expect_err(text);
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid duration {text:?}: unknown unit (Go duration such as 8760h, 2160.5h or 1h30m)"
                )
            );
        }
    }
}
