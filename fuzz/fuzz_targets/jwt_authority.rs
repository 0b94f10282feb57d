//! The token signer's HTTP/2 `:authority` rewriter, which reads a client's frames before the
//! HTTP/2 server does: any byte stream, split into reads of any size, never panics, and what
//! the server gets does not depend on how the client's bytes were split into reads.
#![no_main]

use kpki_serve::fuzzing::jwt_authority;
use libfuzzer_sys::fuzz_target;

/// The client connection preface, so that inputs reach the frame parser.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// fluke-hpack's decoder panics on some malformed table size updates; the rewriter catches
/// that panic and ends the connection (unit test `bad_input_ends_the_connection`). Such a
/// panic is let through to that catch; every other panic still aborts the run.
static HOOK: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().contains("fluke-hpack"))
            {
                return;
            }
            abort(info);
        }));
    });
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(rest);
    let whole = jwt_authority(&bytes, bytes.len());
    let split = jwt_authority(&bytes, usize::from(step % 32) + 1);
    if let (Some(whole), Some(split)) = (&whole, &split) {
        assert_eq!(whole, split, "the output depends on how the input was split");
    }
});
