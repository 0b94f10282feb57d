//! Go durations (`time.ParseDuration`, what kubeadm's `metav1.Duration` fields accept):
//! `8760h`, `87600h0m0s`, `1h30m`, `2160.5h`, `.5h`, `1.5h30m`, `300ms`, `0`; units `ns`,
//! `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`; an optional sign. Fractions are computed as Go
//! does (nanoseconds, truncated), and values beyond Go's int64 nanoseconds are refused.
//! Negative durations are valid Go but never a valid period here, so they are refused.

use std::time::Duration;

/// The largest magnitude Go's `Duration` (int64 nanoseconds) can hold, plus one (`1<<63`).
const LIMIT: u64 = 1 << 63;

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration string as `time.ParseDuration` does; refuses negative values.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("invalid duration {text:?}: {why} (Go duration such as 8760h, 2160.5h or 1h30m)")
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
        let unit = unit_nanos(&s[..unit_len]).ok_or_else(|| bad("unknown unit"))?;
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

    #[test]
    fn parses_like_go() {
        let h = |x: u64| Duration::from_secs(x * 3600);
        let cases: &[(&str, Duration)] = &[
            ("8760h", h(8760)),
            ("87600h0m0s", h(87600)),
            ("1h30m", Duration::from_secs(5400)),
            ("2160.5h", Duration::from_secs(2160 * 3600 + 1800)),
            ("1.5h", Duration::from_secs(5400)),
            (".5h", Duration::from_secs(1800)),
            ("5.h", h(5)),
            ("1.5h30m", h(2)),
            ("+2h", h(2)),
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            ("300ms", Duration::from_millis(300)),
            ("1us", Duration::from_micros(1)),
            ("1\u{b5}s", Duration::from_micros(1)),
            ("1\u{3bc}s", Duration::from_micros(1)),
            ("7ns", Duration::from_nanos(7)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            (
                "2562047h47m16.854775807s",
                Duration::from_nanos((1 << 63) - 1),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text).as_ref(), Ok(want), "{text}");
        }
        for bad in [
            "",
            "h",
            "10",
            "10d",
            "-1h",
            "1h-2m",
            ".h",
            ".",
            "1..5h",
            " 1h",
            "1h ",
            "1H",
            "2562047h47m16.854775808s",
            "9999999999999999999h",
            "+",
            "-",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
