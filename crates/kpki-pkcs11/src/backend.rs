//! [`Pkcs11Backend`]: creates keys on tokens, opens them by `pkcs11:` URI, lists them.

use std::sync::Arc;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use kpki_signer::{
    KeyAlgorithm, KeyBackend, KeyError, KeyInfo, KeyMaterial, KeyUri, Pkcs11Uri, Result, Signer,
    spki,
};

use crate::errors::op_error;
use crate::key::{Pkcs11Key, find_one, object_template, read_protection, read_public_key};
use crate::token::{DEFAULT_POOL_SIZE, Token};
use crate::{import, keygen};

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

    /// Generates a key pair on the token; refuses if a private key with that label or id exists.
    pub fn create_key(&self, uri: &Pkcs11Uri, algorithm: KeyAlgorithm) -> Result<Pkcs11Key> {
        self.new_key(uri, |session, token, label, id| {
            let (mechanism, public, private) = keygen::templates(algorithm, label, id);
            session
                .generate_key_pair(&mechanism, &public, &private)
                .map_err(|e| op_error(token, "C_GenerateKeyPair", &e))?;
            Ok(())
        })
    }

    /// Creates a key pair on the token from existing `material` (sensitive, non-extractable,
    /// sign-only); refuses if a private key with that label or id exists. The token marks it
    /// as not generated there (CKA_ALWAYS_SENSITIVE/CKA_NEVER_EXTRACTABLE false). The new key
    /// must read back with `expected_spki` and sign verifiably with it; otherwise both objects
    /// are destroyed again.
    pub fn import_key(
        &self,
        uri: &Pkcs11Uri,
        material: &KeyMaterial,
        expected_spki: &[u8],
    ) -> Result<Pkcs11Key> {
        let key = self.new_key(uri, |session, token, label, id| {
            let (public, mut private) = import::templates(material, label, id)?;
            let created = session
                .create_object(&private)
                .map_err(|e| op_error(token, "C_CreateObject (private key)", &e));
            import::wipe(&mut private);
            let private_handle = created?;
            if let Err(e) = session.create_object(&public) {
                let _ = session.destroy_object(private_handle);
                return Err(op_error(token, "C_CreateObject (public key)", &e));
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
            let _ = token.with_rw_session(|session| {
                for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                    let template = object_template(class, None, Some(&id));
                    if let Ok(Some(h)) = find_one(session, token.name(), &template, "imported key")
                    {
                        let _ = session.destroy_object(h);
                    }
                }
                Ok(())
            });
            return Err(KeyError::Crypto(format!("import undone: {e}")));
        }
        Ok(key)
    }

    /// Makes a new key (label `object=`, id `id=` or random) with `make`, after checking that
    /// no private key has that label or id; opens it.
    fn new_key(
        &self,
        uri: &Pkcs11Uri,
        make: impl FnOnce(&cryptoki::session::Session, &str, &str, &[u8]) -> Result<()>,
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
        token.with_rw_session(|session| {
            for (template, what) in [
                (
                    object_template(ObjectClass::PRIVATE_KEY, Some(&label), None),
                    format!("label {label:?}"),
                ),
                (
                    object_template(ObjectClass::PRIVATE_KEY, None, Some(&id)),
                    format!("id {}", hex::encode(&id)),
                ),
            ] {
                if find_one(session, token.name(), &template, &what)
                    .map(|h| h.is_some())
                    .unwrap_or(true)
                {
                    return Err(KeyError::AlreadyExists(format!(
                        "a private key with {what} on token {:?}",
                        token.name()
                    )));
                }
            }
            make(session, token.name(), &label, &id)
        })?;
        let mut named = uri.clone();
        named.id = Some(id);
        Pkcs11Key::open(&named, self.pool_size)
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
                Err(e) => {
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
