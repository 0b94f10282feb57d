//! What a requested SAN value must look like before any rule or policy sees it: DNS names
//! of RFC 1123 labels (a leading `*.` wildcard label allowed; the policy decides whether a
//! wildcard is granted), email addresses with such a domain, URIs with a scheme; no NUL,
//! control characters or spaces anywhere. One check for `kpki sign`, the daemon and the
//! CSR controller (they all examine requests through `csr::examine_for`).

/// Longest DNS name.
const MAX_NAME: usize = 253;
/// Longest DNS label.
const MAX_LABEL: usize = 63;
/// Longest URI or email SAN accepted.
const MAX_OTHER: usize = 2048;

/// Why `name` is not a DNS name, if it is not.
pub(crate) fn dns_problem(name: &str) -> Option<String> {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if name.len() > MAX_NAME {
        return Some(format!("longer than {MAX_NAME} characters"));
    }
    if rest.is_empty() {
        return Some("empty".into());
    }
    for label in rest.split('.') {
        if label.is_empty() {
            return Some("an empty label".into());
        }
        if label.len() > MAX_LABEL {
            return Some(format!("a label longer than {MAX_LABEL} characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Some(format!(
                "the character {c:?} (RFC 1123: letters, digits, '-')"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    None
}

fn text_problem(value: &str) -> Option<String> {
    if value.len() > MAX_OTHER {
        return Some(format!("longer than {MAX_OTHER} characters"));
    }
    value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace())
        .map(|c| format!("the character {c:?}"))
}

/// Why `uri` is not a URI SAN, if it is not.
pub(crate) fn uri_problem(uri: &str) -> Option<String> {
    if let Some(p) = text_problem(uri) {
        return Some(p);
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Some("no scheme".into());
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Some(format!("the scheme {scheme:?} is not a URI scheme"));
    }
    rest.is_empty().then(|| "nothing after the scheme".into())
}

/// Why `email` is not an email SAN, if it is not.
pub(crate) fn email_problem(email: &str) -> Option<String> {
    if let Some(p) = text_problem(email) {
        return Some(p);
    }
    match email.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            dns_problem(domain).map(|p| format!("its domain has {p}"))
        }
        _ => Some("not local@domain".into()),
    }
}

/// Checks every requested DNS, email and URI SAN; the first bad one, named with why.
pub(crate) fn check(dns: &[String], emails: &[String], uris: &[String]) -> Result<(), String> {
    let bad = |kind: &str, value: &str, why: String| {
        Err(format!("{kind} SAN {value:?} is not valid: {why}"))
    };
    for d in dns {
        if let Some(why) = dns_problem(d) {
            return bad("DNS", d, why);
        }
    }
    for e in emails {
        if let Some(why) = email_problem(e) {
            return bad("email", e, why);
        }
    }
    for u in uris {
        if let Some(why) = uri_problem(u) {
            return bad("URI", u, why);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.example", vec!["a".repeat(60); 5].join("."));
        let cases: &[(&str, bool)] = &[
            ("example.com", true),
            ("a", true),
            ("kubernetes.default.svc.cluster.local", true),
            ("node-1.Example.COM", true),
            ("*.apps.example.com", true),
            ("xn--bcher-kva.example", true),
            ("1.2.3.4", true),
            ("", false),
            ("*.", false),
            ("*", false),
            ("a.*.example.com", false),
            ("evil.com\0.svc.cluster.local", false),
            ("x\r\nHost: evil\r\n.svc.cluster.local", false),
            ("a b.example", false),
            ("a\t.example", false),
            ("a..svc.cluster.local", false),
            (".svc.cluster.local", false),
            ("example.com.", false),
            ("-a.example", false),
            ("a-.example", false),
            ("under_score.example", false),
            ("ünïcode.example", false),
            (&long_label, false),
            (&long_name, false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                dns_problem(name).is_none(),
                *ok,
                "{name:?}: {:?}",
                dns_problem(name)
            );
        }
    }

    #[test]
    fn uris_and_emails() {
        let uris: &[(&str, bool)] = &[
            ("spiffe://cluster.local/ns/default/sa/app", true),
            ("https://example.com/a?b=c", true),
            ("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", true),
            ("spiffe://a/\0b", false),
            ("spiffe://a/b c", false),
            ("spiffe://a/\nb", false),
            ("no-scheme", false),
            ("1http://x", false),
            ("http:", false),
            (":x", false),
        ];
        for (u, ok) in uris {
            assert_eq!(uri_problem(u).is_none(), *ok, "{u:?}");
        }
        let emails: &[(&str, bool)] = &[
            ("jane@example.com", true),
            ("a.b+c@sub.example.com", true),
            ("@example.com", false),
            ("jane", false),
            ("jane@", false),
            ("jane@exa mple.com", false),
            ("ja\0ne@example.com", false),
            ("jane@-example.com", false),
        ];
        for (e, ok) in emails {
            assert_eq!(email_problem(e).is_none(), *ok, "{e:?}");
        }
    }

    #[test]
    fn check_names_the_first_bad_value() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(
            check(
                &s(&["a.example"]),
                &s(&["j@a.example"]),
                &s(&["spiffe://a/b"])
            )
            .is_ok()
        );
        let e = check(&s(&["a.example", "a..example"]), &[], &[]).unwrap_err();
        assert!(
            e.starts_with("DNS SAN \"a..example\" is not valid: an empty label"),
            "{e}"
        );
        let e = check(&[], &[], &s(&["spiffe://a/\0"])).unwrap_err();
        assert!(e.starts_with("URI SAN"), "{e}");
    }
}
