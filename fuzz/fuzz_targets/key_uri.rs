//! Key URIs (`file:` and RFC 7512 `pkcs11:`): every URI that parses prints as a URI that
//! reads back as the same key. A `pin-value` is never printed, so the URI read back is the
//! original without it.
#![no_main]

use kpki_signer::KeyUri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = text.parse::<KeyUri>() else {
        return;
    };
    let printed = uri.to_string();
    let expected = match &uri {
        KeyUri::Pkcs11(u) => KeyUri::Pkcs11(u.without_pin_value()),
        other => other.clone(),
    };
    match printed.parse::<KeyUri>() {
        Ok(again) => assert_eq!(
            again, expected,
            "{text:?} printed as {printed:?} reads back differently"
        ),
        Err(e) => panic!("{text:?} printed as {printed:?}, which does not parse: {e}"),
    }
});
