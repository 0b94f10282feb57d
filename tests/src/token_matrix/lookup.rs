//! Opening a key by URI on every token: a key another process created after this one loaded
//! the module is found (see `jwt::rotate_to_key_created_later` for the running daemon), and
//! a key that does not exist is reported in one line, after one re-initialisation of the
//! module at most. `kpki keys show` of a missing key is timed next to `kpki keys show` of a
//! present one, each in a fresh process.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{assert_one_clean_error_line, must_create_key};
use crate::hsm::matrix::{Token, TokenKind};
use crate::{kpki, text};

/// How many times each lookup runs (the median is reported).
const RUNS: usize = 5;

/// Median wall time of `kpki keys show` in a fresh process.
#[derive(Debug)]
pub struct LookupTimes {
    /// A key that exists.
    pub present: Duration,
    /// A key that does not.
    pub missing: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Shows a present and a missing key `RUNS` times each on a fresh token of `kind`: the
/// present one succeeds, the missing one exits 1 with one error line naming the object and
/// the token, every time; with kpki's info log the missing key shows exactly one
/// re-initialisation of the module and the present one none. Returns the median times.
pub fn missing_key_is_one_line(kind: TokenKind) -> LookupTimes {
    let token = Token::start(kind);
    let name = kind.name();
    let algorithm = super::cluster_algorithm(kind);
    let present = token.key_uri("present");
    must_create_key(&token, &present, algorithm);
    let missing = token.key_uri("absent");
    let (mut shown, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = kpki(&["keys", "show", &present]);
        shown.push(start.elapsed());
        assert!(out.status.success(), "{name}: {:?}", text(&out));

        let start = Instant::now();
        let out = kpki(&["keys", "show", &missing]);
        refused.push(start.elapsed());
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout} {stderr}");
        assert!(stdout.is_empty(), "{name}: {stdout}");
        assert_one_clean_error_line(name, &stderr);
        assert!(
            stderr.contains(&format!(
                "key object \"absent\" on token \"{}\" not found",
                token.label()
            )),
            "{name}: {stderr}"
        );
    }
    // With kpki's info log: exactly one re-initialisation for the missing key on tpm2 (no
    // loop), none for the present one.
    // Only tpm2-pkcs11 reads its store once, at C_Initialize; no other module is re-read.
    let rereads_for_missing = usize::from(name == "tpm2");
    for (uri, want, ok) in [(&missing, rereads_for_missing, false), (&present, 0, true)] {
        let out = Command::new(crate::kpki_bin())
            .args(["keys", "show", uri])
            .env("KPKI_LOG", "info")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.success(), ok, "{name}: {stdout} {stderr}");
        let rereads = stderr
            .lines()
            .filter(|l| l.contains("re-reading the token's objects"))
            .count();
        assert_eq!(rereads, want, "{name} {uri}: {stderr}");
    }
    LookupTimes {
        present: median(shown),
        missing: median(refused),
    }
}
