//! Go-style durations as kubeadm writes them (`8760h`, `87600h0m0s`, `1h30m`, `90s`).

use std::time::Duration;

/// Parses a Go duration string made of `<number><unit>` parts with units h, m, s, ms.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. 8760h, 87600h0m0s, 30m)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds_per: f64 = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(value as f64 * seconds_per);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubeadm_periods() {
        assert_eq!(
            parse_go_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(
            parse_go_duration("87600h0m0s"),
            Ok(Duration::from_secs(87600 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "h", "10", "10d", "-1h", "1.5h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
