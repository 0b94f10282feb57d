//! [`Pkcs11Backend`]: creates keys on tokens, opens them by `pkcs11:` URI, lists them.

use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use kpki_signer::{
    KeyAlgorithm, KeyBackend, KeyError, KeyInfo, KeyMaterial, KeyUri, Pkcs11Uri, Result, Signer,
    spki,
};

use crate::errors::{Class, class, describe, op_error};
use crate::key::{Pkcs11Key, find_one, object_template, read_protection, read_public_key};
use crate::token::{DEFAULT_POOL_SIZE, Fail, Token, TokenView};
use crate::{import, keygen, mechanisms};

/// How often a key the token reported created but did not keep is made again.
const KEPT_ATTEMPTS: u32 = 3;

/// The PKCS#11 backend. Tokens and their sessions are shared process-wide; this value only
/// carries the pool size used when a token is first opened.
#[derive(Debug, Clone, Copy)]
pub struct Pkcs11Backend {
    pool_size: usize,
}

impl Default for Pkcs11Backend {
    fn default() -> Self {
        Pkcs11Backend {
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

fn pkcs11_uri(uri: &KeyUri) -> Result<&Pkcs11Uri> {
    match uri {
        KeyUri::Pkcs11(u) => Ok(u),
        KeyUri::File(_) => Err(KeyError::InvalidUri {
            uri: uri.to_string(),
            problem: "the PKCS#11 backend takes pkcs11: URIs".into(),
        }),
    }
}

impl Pkcs11Backend {
    /// A backend whose tokens get `pool_size` signing sessions (first opener wins).
    pub fn with_pool_size(pool_size: usize) -> Self {
        Pkcs11Backend {
            pool_size: pool_size.max(1),
        }
    }

    /// Generates a key pair on the token; refuses if a private key with that label or id
    /// exists, and refuses before creating anything when the token lacks the mechanism or
    /// key size (see `mechanisms`). A token that refuses the full template (or is known to:
    /// tpm2-pkcs11) gets it without the public usage attributes it derives itself; the new
    /// private key is read back and destroyed again unless it is sensitive, never
    /// extractable and sign-only.
    pub fn create_key(&self, uri: &Pkcs11Uri, algorithm: KeyAlgorithm) -> Result<Pkcs11Key> {
        self.new_key(uri, |session, view, token, label, id| {
            mechanisms::check_generate(view, token, algorithm)?;
            let (mechanism, public, private) = keygen::templates(algorithm, label, id);
            if view.module.library.is_tpm2_pkcs11() {
                // Known to derive CKA_VERIFY/CKA_ENCRYPT and to refuse (loudly) otherwise.
                let public = keygen::relaxed_public(&public);
                let (public_h, private_h) = session
                    .generate_key_pair(&mechanism, &public, &private)
                    .map_err(Fail::ck("C_GenerateKeyPair"))?;
                return keygen::check_generated(session, token, public_h, private_h, true);
            }
            let (public_h, private_h, relaxed) =
                match session.generate_key_pair(&mechanism, &public, &private) {
                    Ok((p, q)) => (p, q, false),
                    Err(full) if matches!(class(&full), Class::Refused | Class::Failing) => {
                        let relaxed_public = keygen::relaxed_public(&public);
                        match session.generate_key_pair(&mechanism, &relaxed_public, &private) {
                            Ok((p, q)) => {
                                tracing::info!(
                                    token,
                                    refused = %describe(&full),
                                    "token set the public key usage itself (template without CKA_VERIFY/CKA_ENCRYPT)"
                                );
                                (p, q, true)
                            }
                            // Busy now: retry the whole creation later.
                            Err(err) if class(&err) == Class::Failing => {
                                return Err(Fail::Ck {
                                    op: "C_GenerateKeyPair",
                                    err,
                                });
                            }
                            Err(_) => {
                                return Err(Fail::Ck {
                                    op: "C_GenerateKeyPair",
                                    err: full,
                                });
                            }
                        }
                    }
                    Err(err) => {
                        return Err(Fail::Ck {
                            op: "C_GenerateKeyPair",
                            err,
                        });
                    }
                };
            keygen::check_generated(session, token, public_h, private_h, relaxed)
        })
    }

    /// Creates a key pair on the token from existing `material` (sensitive, non-extractable,
    /// sign-only); refuses if a private key with that label or id exists. The token marks it
    /// as not generated there (CKA_ALWAYS_SENSITIVE/CKA_NEVER_EXTRACTABLE false). The new key
    /// must read back with `expected_spki` and sign verifiably with it; otherwise both objects
    /// are destroyed again. Tokens known to refuse private-key objects (tpm2-pkcs11) are
    /// refused up front with the token's own import tool named.
    pub fn import_key(
        &self,
        uri: &Pkcs11Uri,
        material: &KeyMaterial,
        expected_spki: &[u8],
    ) -> Result<Pkcs11Key> {
        let key = self.new_key(uri, |session, view, token, label, id| {
            if let Some(refusal) = import::refusal(view, token) {
                return Err(Fail::Key(refusal));
            }
            let (public, mut private) = import::templates(material, label, id)?;
            let created = session.create_object(&private);
            import::wipe(&mut private);
            let private_handle = match created {
                Ok(h) => h,
                Err(err) if class(&err) == Class::Refused => {
                    return Err(Fail::Key(import::refused(view, token, &err)));
                }
                Err(err) => {
                    return Err(Fail::Ck {
                        op: "C_CreateObject (private key)",
                        err,
                    });
                }
            };
            if let Err(err) = session.create_object(&public) {
                keygen::destroy(session, &[private_handle]);
                return Err(Fail::Ck {
                    op: "C_CreateObject (public key)",
                    err,
                });
            }
            Ok(())
        })?;
        let check = || -> Result<()> {
            if key.public_key_spki() != expected_spki {
                return Err(KeyError::Crypto(
                    "the imported key reads back with another public key".into(),
                ));
            }
            let probe = b"kpki import check";
            let signature = key.sign(probe)?;
            spki::verify(expected_spki, probe, &signature)
        };
        if let Err(e) = check() {
            let KeyUri::Pkcs11(named) = key.uri() else {
                return Err(e);
            };
            let token = Token::get(named, self.pool_size)?;
            let id = named.id.clone().unwrap_or_default();
            let _ = token.with_rw_session(|session, _| {
                for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                    let template = object_template(class, None, Some(&id));
                    if let Ok(Some(h)) = find_one(session, token.name(), &template, "imported key")
                    {
                        keygen::destroy(session, &[h]);
                    }
                }
                Ok(())
            });
            return Err(KeyError::Crypto(format!("import undone: {e}")));
        }
        Ok(key)
    }

    /// Makes a new key (label `object=`, id `id=` or random) with `make`, after checking that
    /// no private key has that label or id; opens it. A busy token is retried with backoff
    /// (the whole check-and-make), see [`Token::with_rw_session`].
    fn new_key(
        &self,
        uri: &Pkcs11Uri,
        mut make: impl FnMut(
            &cryptoki::session::Session,
            &TokenView,
            &str,
            &str,
            &[u8],
        ) -> std::result::Result<(), Fail>,
    ) -> Result<Pkcs11Key> {
        let label = uri.object.clone().ok_or_else(|| KeyError::InvalidUri {
            uri: uri.to_string(),
            problem: "a new key needs object= (its label)".into(),
        })?;
        let id = match &uri.id {
            Some(id) => id.clone(),
            None => {
                let mut id = vec![0u8; 16];
                SystemRandom::new()
                    .fill(&mut id)
                    .map_err(|_| KeyError::Crypto("no randomness for a key id".into()))?;
                id
            }
        };
        let token = Token::get(uri, self.pool_size)?;
        let mut named = uri.clone();
        named.id = Some(id.clone());
        for attempt in 1..=KEPT_ATTEMPTS {
            let keeps_store_in_memory = self.make_once(&token, &label, &id, &mut make)?;
            if !keeps_store_in_memory {
                return Pkcs11Key::open(&named, self.pool_size);
            }
            // tpm2-pkcs11 keeps its object store in memory and writes it to sqlite: with
            // other processes writing at the same moment it can answer C_GenerateKeyPair
            // with CKR_OK and still not keep the key. Read the store again and make sure the
            // new key is in it; if it is not, make it again.
            token.reread_objects_when_free(&named.object_description())?;
            match Pkcs11Key::open(&named, self.pool_size) {
                Err(KeyError::NotFound(what)) => tracing::warn!(
                    token = %token.name(),
                    attempt,
                    "the token reported {what} created but did not keep it; creating it again"
                ),
                other => return other,
            }
        }
        Err(KeyError::Pkcs11 {
            operation: "C_GenerateKeyPair".into(),
            problem: format!(
                "token {:?} busy: it reported {} created {KEPT_ATTEMPTS} times but did not \
                 keep it (another process may be writing the token's store); try again",
                token.name(),
                named.object_description()
            ),
        })
    }

    /// One check-and-make of a new key on `token` (busy retried inside); true when the module
    /// keeps its object store in memory, so what it reports must be read back from the store.
    fn make_once(
        &self,
        token: &Token,
        label: &str,
        id: &[u8],
        make: &mut impl FnMut(
            &cryptoki::session::Session,
            &TokenView,
            &str,
            &str,
            &[u8],
        ) -> std::result::Result<(), Fail>,
    ) -> Result<bool> {
        token.with_rw_session(|session, view| {
            for (template, what) in [
                (
                    object_template(ObjectClass::PRIVATE_KEY, Some(label), None),
                    format!("label {label:?}"),
                ),
                (
                    object_template(ObjectClass::PRIVATE_KEY, None, Some(id)),
                    format!("id {}", hex::encode(id)),
                ),
            ] {
                if find_one(session, token.name(), &template, &what)?.is_some() {
                    return Err(Fail::Key(KeyError::AlreadyExists(format!(
                        "a private key with {what} on token {:?}",
                        token.name()
                    ))));
                }
            }
            make(session, view, token.name(), label, id)?;
            Ok(view.module.library.is_tpm2_pkcs11())
        })
    }

    fn info(key: &Pkcs11Key) -> Result<KeyInfo> {
        let KeyUri::Pkcs11(u) = key.uri() else {
            return Err(KeyError::Unsupported(
                "PKCS#11 key without pkcs11 URI".into(),
            ));
        };
        Ok(KeyInfo {
            uri: key.uri().clone(),
            algorithm: key.algorithm(),
            spki_sha256: spki::sha256_hex(key.public_key_spki()),
            label: u.object.clone(),
            id: u.id.as_ref().map(hex::encode),
            protection: Some(key.protection()?),
        })
    }
}

impl KeyBackend for Pkcs11Backend {
    fn create(&self, uri: &KeyUri, algorithm: KeyAlgorithm) -> Result<Arc<dyn Signer>> {
        Ok(Arc::new(self.create_key(pkcs11_uri(uri)?, algorithm)?))
    }

    fn open(&self, uri: &KeyUri) -> Result<Arc<dyn Signer>> {
        Ok(Arc::new(Pkcs11Key::open(pkcs11_uri(uri)?, self.pool_size)?))
    }

    fn describe(&self, uri: &KeyUri) -> Result<KeyInfo> {
        Self::info(&Pkcs11Key::open(pkcs11_uri(uri)?, self.pool_size)?)
    }

    /// Lists every private key on the token the URI names.
    fn list(&self, uri: &KeyUri) -> Result<Vec<KeyInfo>> {
        let given = pkcs11_uri(uri)?;
        let token = Token::get(given, self.pool_size)?;
        let uri = given.token_only().without_pin_value();
        let lease = token.lease()?;
        let session = lease.session();
        let handles = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map_err(|e| op_error(token.name(), "C_FindObjects", &e))?;
        let mut out = Vec::new();
        for h in handles {
            let attrs = session
                .get_attributes(h, &[AttributeType::Label, AttributeType::Id])
                .map_err(|e| op_error(token.name(), "C_GetAttributeValue", &e))?;
            let mut key_uri = uri.clone();
            for a in attrs {
                match a {
                    Attribute::Label(l) => {
                        key_uri.object = Some(String::from_utf8_lossy(&l).into_owned())
                    }
                    Attribute::Id(id) if !id.is_empty() => key_uri.id = Some(id),
                    _ => {}
                }
            }
            let (algorithm, spki_der) = match read_public_key(
                session,
                token.name(),
                h,
                key_uri.object.as_deref(),
                key_uri.id.as_deref(),
            ) {
                Ok(v) => v,
                Err(f) => {
                    let e = f.into_key_error(token.name());
                    tracing::warn!(key = %key_uri, error = %e, "skipping key kpki cannot use");
                    continue;
                }
            };
            let protection = read_protection(session, token.name(), h)?;
            out.push(KeyInfo {
                uri: KeyUri::Pkcs11(key_uri.clone()),
                algorithm,
                spki_sha256: spki::sha256_hex(&spki_der),
                label: key_uri.object.clone(),
                id: key_uri.id.as_ref().map(hex::encode),
                protection: Some(protection),
            });
        }
        Ok(out)
    }
}
