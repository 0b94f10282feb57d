//! Keys generated on the token can't be read or made extractable.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kpki_e2e::hsm;
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend};

#[test]
fn generated_private_keys_are_sensitive_and_never_extractable() {
    let token = hsm::token();
    let backend = Pkcs11Backend::default();
    backend
        .create(
            &token.key_uri("prot-ec").parse().unwrap(),
            KeyAlgorithm::EcdsaP256,
        )
        .unwrap();
    backend
        .create(
            &token.key_uri("prot-rsa").parse().unwrap(),
            KeyAlgorithm::Rsa2048,
        )
        .unwrap();

    // An independent look through cryptoki directly (a second C_Initialize is tolerated).
    let ctx = Pkcs11::new(hsm::module()).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|t| t.label() == token.label)
                .unwrap_or(false)
        })
        .expect("token slot");
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(hsm::USER_PIN.into()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e:?}"),
    }
    for (label, secret) in [
        ("prot-ec", AttributeType::Value),
        ("prot-rsa", AttributeType::PrivateExponent),
    ] {
        let handle = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()[0];
        let info = session.get_attribute_info(handle, &[secret]).unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{label}: {secret:?} must be CKR_ATTRIBUTE_SENSITIVE, got {info:?}"
        );
        let err = session
            .update_attributes(handle, &[Attribute::Extractable(true)])
            .expect_err("must be refused");
        assert!(
            matches!(
                err,
                cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::AttributeReadOnly, _)
            ),
            "{label}: setting CKA_EXTRACTABLE=true gave {err:?}"
        );
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::Unwrap,
                    AttributeType::Derive,
                    AttributeType::SignRecover,
                ],
            )
            .unwrap();
        assert!(attrs.contains(&Attribute::Sign(true)));
        for off in [
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::SignRecover(false),
        ] {
            assert!(attrs.contains(&off), "{label}: {off:?} not set: {attrs:?}");
        }
    }

    hsm::require_tool("pkcs11-tool");
    let out = std::process::Command::new("pkcs11-tool")
        .args([
            "--module",
            hsm::module().to_str().unwrap(),
            "--token-label",
            &token.label,
            "--login",
            "--pin",
            hsm::USER_PIN,
            "--list-objects",
            "--type",
            "privkey",
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pkcs11-tool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing.matches("never extractable").count(), 2, "{listing}");
    assert_eq!(listing.matches("Usage:      sign").count(), 2, "{listing}");
}
