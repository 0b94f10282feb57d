//! A linear pre-check of YAML (and JSON) text before the YAML parser sees it: flow
//! collections (`[`, `{`) nested deeper than [`MAX_DEPTH`] are refused, because the parser's
//! time grows with the square of the nesting (a 200 KB file of nested `[` took 18 s) and no
//! kubeconfig, kubeadm configuration or CertificateSigningRequest nests like that.

/// Deepest flow nesting accepted.
pub(crate) const MAX_DEPTH: usize = 64;

/// Refuses `text` whose flow collections nest deeper than [`MAX_DEPTH`]; quoted scalars and
/// comments are skipped.
pub(crate) fn check(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut prev = '\n';
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '\'' if !prev.is_alphanumeric() => {
                while let Some(q) = chars.next() {
                    if q == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '#' if prev.is_whitespace() => {
                for q in chars.by_ref() {
                    if q == '\n' {
                        break;
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("collections nested deeper than {MAX_DEPTH} levels"));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_bounded_linearly() {
        let deep = |n: usize| format!("a: {}{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<(String, bool)> = vec![
            ("apiVersion: v1\nkind: Config\n".into(), true),
            (deep(MAX_DEPTH), true),
            (deep(MAX_DEPTH + 1), false),
            (format!("a: \"{}\"", "[".repeat(1000)), true),
            (format!("a: '{}'", "{".repeat(1000)), true),
            (format!("a: 'it''s {}'", "[".repeat(1000)), true),
            (format!("a: 1 # {}\n", "[".repeat(1000)), true),
            (format!("a: {}", "{a: ".repeat(MAX_DEPTH + 1)), false),
            (
                format!("{{\"a\": {}1{}}}", "[".repeat(10), "]".repeat(10)),
                true,
            ),
        ];
        for (text, ok) in &cases {
            assert_eq!(check(text).is_ok(), *ok, "{}", &text[..text.len().min(60)]);
        }
        // 100,000 levels are refused at once (linear scan).
        let start = std::time::Instant::now();
        assert!(check(&deep(100_000)).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
