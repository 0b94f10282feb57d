//! Key URIs (`file:` and RFC 7512 `pkcs11:`): every URI that parses prints as a URI that
//! reads back as the same key.
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
    match printed.parse::<KeyUri>() {
        Ok(again) => assert_eq!(
            again, uri,
            "{text:?} printed as {printed:?} reads back differently"
        ),
        Err(e) => panic!("{text:?} printed as {printed:?}, which does not parse: {e}"),
    }
});
