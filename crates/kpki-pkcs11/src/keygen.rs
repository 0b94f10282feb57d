//! Key pair templates: generated on the token, private half sensitive, never extractable,
//! sign-only, with every other usage explicitly false (defaults differ between tokens).
//!
//! Some tokens fix public-key usage themselves and refuse a template that states it
//! otherwise (tpm2-pkcs11 derives `CKA_VERIFY`/`CKA_ENCRYPT` from the TPM key and answers
//! `CKR_GENERAL_ERROR` on a mismatch). Key creation therefore tries the full template
//! first and, only if the token refuses it, the same template without those two public
//! attributes ([`relaxed_public`]); whichever was used, the new private key is read back
//! and must be sensitive, never extractable and sign-only ([`check_generated`]), or it is
//! destroyed again.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;
use kpki_signer::{KeyAlgorithm, KeyError};

use crate::token::Fail;

/// Attributes every public key object of kpki carries: on the token, public, verify-only.
pub(crate) fn public_base(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::VerifyRecover(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// Attributes every private key object of kpki carries: on the token, private, sensitive,
/// never extractable, sign-only.
pub(crate) fn private_base(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::SignRecover(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// The mechanism and the public and private templates for a new key pair.
pub(crate) fn templates(
    algorithm: KeyAlgorithm,
    label: &str,
    id: &[u8],
) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
    let mut public = public_base(label, id);
    let private = private_base(label, id);
    let mechanism = match (algorithm.rsa_bits(), algorithm.ec_params_der()) {
        (Some(bits), _) => {
            public.push(Attribute::ModulusBits((bits as u64).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
        (None, Some(params)) => {
            public.push(Attribute::EcParams(params.to_vec()));
            Mechanism::EccKeyPairGen
        }
        (None, None) => unreachable!("every KeyAlgorithm is RSA or EC"),
    };
    (mechanism, public, private)
}

/// The public template without the usage attributes some tokens derive themselves
/// (`CKA_VERIFY`, `CKA_ENCRYPT`).
pub(crate) fn relaxed_public(public: &[Attribute]) -> Vec<Attribute> {
    public
        .iter()
        .filter(|a| !matches!(a, Attribute::Verify(_) | Attribute::Encrypt(_)))
        .cloned()
        .collect()
}

/// What a private key read back as; `None` where the token did not return the attribute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrivateUsage {
    pub(crate) sensitive: Option<bool>,
    pub(crate) extractable: Option<bool>,
    pub(crate) always_sensitive: Option<bool>,
    pub(crate) never_extractable: Option<bool>,
    pub(crate) sign: Option<bool>,
    pub(crate) decrypt: Option<bool>,
    pub(crate) unwrap: Option<bool>,
    pub(crate) derive: Option<bool>,
}

impl PrivateUsage {
    fn read(session: &Session, private: ObjectHandle) -> Result<PrivateUsage, Fail> {
        let attrs = session
            .get_attributes(
                private,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::Unwrap,
                    AttributeType::Derive,
                ],
            )
            .map_err(Fail::ck("C_GetAttributeValue"))?;
        let mut u = PrivateUsage::default();
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => u.sensitive = Some(v),
                Attribute::Extractable(v) => u.extractable = Some(v),
                Attribute::AlwaysSensitive(v) => u.always_sensitive = Some(v),
                Attribute::NeverExtractable(v) => u.never_extractable = Some(v),
                Attribute::Sign(v) => u.sign = Some(v),
                Attribute::Decrypt(v) => u.decrypt = Some(v),
                Attribute::Unwrap(v) => u.unwrap = Some(v),
                Attribute::Derive(v) => u.derive = Some(v),
                _ => {}
            }
        }
        Ok(u)
    }

    /// What falls short of a key generated on the token for signing only (empty: nothing).
    pub(crate) fn shortfalls(&self, generated: bool) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.sensitive != Some(true) {
            out.push("CKA_SENSITIVE is not true");
        }
        if self.extractable != Some(false) {
            out.push("CKA_EXTRACTABLE is not false");
        }
        if generated && self.always_sensitive != Some(true) {
            out.push("CKA_ALWAYS_SENSITIVE is not true");
        }
        if generated && self.never_extractable != Some(true) {
            out.push("CKA_NEVER_EXTRACTABLE is not true");
        }
        if self.sign != Some(true) {
            out.push("CKA_SIGN is not true");
        }
        if self.decrypt == Some(true) {
            out.push("CKA_DECRYPT is true");
        }
        if self.unwrap == Some(true) {
            out.push("CKA_UNWRAP is true");
        }
        if self.derive == Some(true) {
            out.push("CKA_DERIVE is true");
        }
        out
    }
}

/// Reads the new private key back and refuses it (destroying both halves) unless it is
/// sensitive, never extractable and sign-only. After a relaxed template the public key's
/// usage is set as the full template says where the token allows it.
pub(crate) fn check_generated(
    session: &Session,
    token: &str,
    public: ObjectHandle,
    private: ObjectHandle,
    relaxed: bool,
) -> Result<(), Fail> {
    let usage = match PrivateUsage::read(session, private) {
        Ok(u) => u,
        Err(f) => {
            destroy(session, &[private, public]);
            return Err(f);
        }
    };
    let short = usage.shortfalls(true);
    if !short.is_empty() {
        destroy(session, &[private, public]);
        return Err(Fail::Key(KeyError::Unsupported(format!(
            "token {token:?} generated a key that is not protected as asked ({}); it was destroyed",
            short.join(", ")
        ))));
    }
    if relaxed {
        // Best effort: tokens that derive these refuse to change them, which is fine.
        if let Err(e) = session.update_attributes(
            public,
            &[Attribute::Verify(true), Attribute::Encrypt(false)],
        ) {
            tracing::debug!(token, error = %crate::errors::describe(&e), "public key usage left as the token set it");
        }
    }
    Ok(())
}

/// Destroys objects, ignoring errors (used to undo a refused creation).
pub(crate) fn destroy(session: &Session, handles: &[ObjectHandle]) {
    for h in handles {
        if let Err(e) = session.destroy_object(*h) {
            tracing::warn!(error = %crate::errors::describe(&e), "could not destroy an object of a refused key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_template_drops_only_derived_public_usage() {
        let (_, public, private) = templates(KeyAlgorithm::Rsa2048, "ca", &[1]);
        let relaxed = relaxed_public(&public);
        assert_eq!(relaxed.len(), public.len() - 2);
        assert!(
            !relaxed
                .iter()
                .any(|a| matches!(a, Attribute::Verify(_) | Attribute::Encrypt(_)))
        );
        assert!(relaxed.contains(&Attribute::Wrap(false)));
        assert!(relaxed.contains(&Attribute::Token(true)));
        // The private template is never relaxed.
        assert!(private.contains(&Attribute::Sensitive(true)));
        assert!(private.contains(&Attribute::Extractable(false)));
    }

    #[test]
    fn shortfalls_of_private_keys() {
        let good = PrivateUsage {
            sensitive: Some(true),
            extractable: Some(false),
            always_sensitive: Some(true),
            never_extractable: Some(true),
            sign: Some(true),
            decrypt: Some(false),
            unwrap: Some(false),
            derive: Some(false),
        };
        let table: [(PrivateUsage, bool, &[&str]); 7] = [
            (good, true, &[]),
            (
                PrivateUsage {
                    decrypt: None,
                    unwrap: None,
                    derive: None,
                    ..good
                },
                true,
                &[],
            ),
            (
                PrivateUsage {
                    extractable: Some(true),
                    ..good
                },
                true,
                &["CKA_EXTRACTABLE is not false"],
            ),
            (
                PrivateUsage {
                    sensitive: None,
                    ..good
                },
                true,
                &["CKA_SENSITIVE is not true"],
            ),
            (
                PrivateUsage {
                    decrypt: Some(true),
                    ..good
                },
                true,
                &["CKA_DECRYPT is true"],
            ),
            (
                PrivateUsage {
                    never_extractable: Some(false),
                    always_sensitive: Some(false),
                    ..good
                },
                true,
                &[
                    "CKA_ALWAYS_SENSITIVE is not true",
                    "CKA_NEVER_EXTRACTABLE is not true",
                ],
            ),
            (
                PrivateUsage {
                    never_extractable: Some(false),
                    always_sensitive: Some(false),
                    ..good
                },
                false,
                &[],
            ),
        ];
        for (usage, generated, want) in table {
            assert_eq!(usage.shortfalls(generated), want, "{usage:?}");
        }
    }
}
