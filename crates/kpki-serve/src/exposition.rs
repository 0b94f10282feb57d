//! Which exposition format `/metrics` answers: OpenMetrics 1.0 when the scraper's `Accept`
//! asks for `application/openmetrics-text`, the classic Prometheus text format 0.0.4
//! otherwise. The registry encodes OpenMetrics; the classic text is derived from it by the
//! rules the two formats differ by: no `# EOF` and `# UNIT` lines, a counter's `# HELP` and
//! `# TYPE` name its `_total` sample, an `info` metric is a gauge named `…_info`, `unknown`
//! is `untyped`. Samples, labels, escaping and values are written alike in both.

/// OpenMetrics' content type.
pub(crate) const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's content type.
pub(crate) const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when `accept` (the header's value) asks for OpenMetrics with a quality above 0.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The classic text format of the OpenMetrics text `om`.
pub(crate) fn classic(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // Renames of the current family's descriptor lines: (name, classic name).
    let mut family: Option<(String, String)> = None;
    let descriptor = |line: &str, kind: &str| -> Option<(String, String)> {
        let rest = line.strip_prefix(&format!("# {kind} "))?;
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((name.to_string(), tail.to_string()))
    };
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some((name, tail)) = descriptor(line, "TYPE") {
            let (renamed, kind) = match tail.as_str() {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.clone(), "untyped"),
                other => (name.clone(), other),
            };
            // `# HELP` precedes `# TYPE` in OpenMetrics; the classic text names the sample.
            if let Some(help) = out.rfind(&format!("# HELP {name} ")) {
                let at = help + "# HELP ".len();
                out.replace_range(at..at + name.len(), &renamed);
            }
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            family = Some((name, renamed));
            continue;
        }
        if line.starts_with("# HELP ") {
            family = None;
        }
        // A counter's `_created` sample has no classic counterpart.
        if let Some((name, _)) = &family
            && line.starts_with(&format!("{name}_created"))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const ACCEPT: &[(Option<&str>, bool)] = &[
        (None, false),
        (Some("*/*"), false),
        (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), false),
        // Prometheus 2.x/3.x scrape header.
        (Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), true),
        (Some("Application/OpenMetrics-Text"), true),
        (Some("application/openmetrics-text;q=0, text/plain"), false),
    ];

    #[test]
    fn accept_picks_the_format() {
        for (accept, want) in ACCEPT {
            assert_eq!(wants_openmetrics(*accept), *want, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_becomes_classic_text() {
        let om = "# HELP kpki_requests API requests.\n# TYPE kpki_requests counter\nkpki_requests_total{code=\"\"} 3\nkpki_requests_created 1.7e9\n# HELP kpki_build Build.\n# TYPE kpki_build info\nkpki_build_info{version=\"0.1.0\"} 1\n# HELP kpki_ready Ready.\n# TYPE kpki_ready gauge\nkpki_ready 1\n# HELP x_seconds Time.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\nx_seconds_bucket{le=\"+Inf\"} 2\nx_seconds_sum 0.5\nx_seconds_count 2\n# EOF\n";
        let want = "# HELP kpki_requests_total API requests.\n# TYPE kpki_requests_total counter\nkpki_requests_total{code=\"\"} 3\n# HELP kpki_build_info Build.\n# TYPE kpki_build_info gauge\nkpki_build_info{version=\"0.1.0\"} 1\n# HELP kpki_ready Ready.\n# TYPE kpki_ready gauge\nkpki_ready 1\n# HELP x_seconds Time.\n# TYPE x_seconds histogram\nx_seconds_bucket{le=\"+Inf\"} 2\nx_seconds_sum 0.5\nx_seconds_count 2\n";
        assert_eq!(classic(om), want);
    }
}
