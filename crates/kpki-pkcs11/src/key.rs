//! [`Pkcs11Key`]: a private key on a token, used through the token's session pool.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use kpki_signer::{KeyAlgorithm, KeyError, KeyProtection, KeyUri, Pkcs11Uri, Result, Signer, spki};

use crate::errors::op_error;
use crate::token::{Fail, Lease, Token};

/// A private key on a token. Holds no key material: only how to find the key again
/// (id and/or label), its public key, and a handle cached per connection generation.
pub struct Pkcs11Key {
    token: Arc<Token>,
    uri: KeyUri,
    label: Option<String>,
    id: Option<Vec<u8>>,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    handle: Mutex<Option<(u64, ObjectHandle)>>,
    // When the key last signed (probe or real signature) and whether that worked.
    last_result: Mutex<Option<(Instant, bool)>>,
    // An RSA key on a token that lists CKM_SHA256_RSA_PKCS_PSS or CKM_RSA_PKCS_PSS.
    pss: bool,
}

/// The readiness probe signs at most once per this window per key.
pub const PROBE_WINDOW: Duration = Duration::from_secs(1);

/// What the readiness probe signs (a fixed message: one digest, one signature).
const PROBE_MESSAGE: &[u8] = b"kpki readiness probe: this key can sign";

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("uri", &self.uri.to_string())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The search template for a key object of `class` by id and/or label.
pub(crate) fn object_template(
    class: ObjectClass,
    label: Option<&str>,
    id: Option<&[u8]>,
) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(l) = label {
        t.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    if let Some(id) = id {
        t.push(Attribute::Id(id.to_vec()));
    }
    t
}

/// Finds exactly one object matching `template`.
pub(crate) fn find_one(
    session: &Session,
    token: &str,
    template: &[Attribute],
    what: &str,
) -> std::result::Result<Option<ObjectHandle>, Fail> {
    let found = session
        .find_objects(template)
        .map_err(Fail::ck("C_FindObjects"))?;
    match found.as_slice() {
        [] => Ok(None),
        [h] => Ok(Some(*h)),
        many => Err(Fail::Key(KeyError::Unsupported(format!(
            "{} objects match {what} on token {token:?}; add id= to the URI to pick one",
            many.len()
        )))),
    }
}

/// Reads the algorithm and SubjectPublicKeyInfo of the key pair whose private half is `private`.
pub(crate) fn read_public_key(
    session: &Session,
    token: &str,
    private: ObjectHandle,
    label: Option<&str>,
    id: Option<&[u8]>,
) -> std::result::Result<(KeyAlgorithm, Vec<u8>), Fail> {
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::KeyType,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
                AttributeType::EcParams,
            ],
        )
        .map_err(Fail::ck("C_GetAttributeValue"))?;
    let mut key_type = None;
    let (mut modulus, mut exponent, mut params) = (None, None, None);
    for a in attrs {
        match a {
            Attribute::KeyType(k) => key_type = Some(k),
            Attribute::Modulus(m) => modulus = Some(m),
            Attribute::PublicExponent(e) => exponent = Some(e),
            Attribute::EcParams(p) => params = Some(p),
            _ => {}
        }
    }
    match key_type {
        Some(KeyType::RSA) => {
            let (Some(n), Some(e)) = (modulus, exponent) else {
                return Err(Fail::Key(KeyError::Unsupported(
                    "RSA key without CKA_MODULUS/CKA_PUBLIC_EXPONENT".into(),
                )));
            };
            let spki = spki::rsa_spki(&n, &e);
            Ok((spki::algorithm_of(&spki)?, spki))
        }
        Some(KeyType::EC) => {
            let params = params
                .ok_or_else(|| KeyError::Unsupported("EC key without CKA_EC_PARAMS".into()))?;
            let algorithm = KeyAlgorithm::from_ec_params_der(&params).ok_or_else(|| {
                KeyError::Unsupported("EC key on a curve other than P-256 or P-384".into())
            })?;
            // The private object has no CKA_EC_POINT: read it from the public half.
            let id_owned = match id {
                Some(i) => Some(i.to_vec()),
                None => session
                    .get_attributes(private, &[AttributeType::Id])
                    .ok()
                    .and_then(|v| {
                        v.into_iter().find_map(|a| {
                            if let Attribute::Id(i) = a {
                                Some(i)
                            } else {
                                None
                            }
                        })
                    }),
            };
            let template = object_template(
                ObjectClass::PUBLIC_KEY,
                if id_owned.is_some() { None } else { label },
                id_owned.as_deref(),
            );
            let public =
                find_one(session, token, &template, "the public key")?.ok_or_else(|| {
                    KeyError::NotFound(format!("public half of the EC key on token {token:?}"))
                })?;
            let point = session
                .get_attributes(public, &[AttributeType::EcPoint])
                .map_err(Fail::ck("C_GetAttributeValue"))?
                .into_iter()
                .find_map(|a| {
                    if let Attribute::EcPoint(p) = a {
                        Some(p)
                    } else {
                        None
                    }
                })
                .ok_or_else(|| {
                    KeyError::Unsupported("EC public key without CKA_EC_POINT".into())
                })?;
            let raw = unwrap_ec_point(algorithm, &point)?;
            Ok((algorithm, spki::ec_spki(algorithm, &raw)?))
        }
        other => Err(Fail::Key(KeyError::Unsupported(format!(
            "key type {other:?} (kpki signs with RSA and EC keys)"
        )))),
    }
}

/// CKA_EC_POINT is a DER OCTET STRING on most tokens and the bare point on some: tell them
/// apart by length (both start with 0x04).
fn unwrap_ec_point(algorithm: KeyAlgorithm, point: &[u8]) -> Result<Vec<u8>> {
    let bare_len = algorithm.ec_scalar_len().map(|n| 2 * n + 1).unwrap_or(0);
    if point.len() == bare_len {
        return Ok(point.to_vec());
    }
    yasna::parse_der(point, |r| r.read_bytes())
        .ok()
        .filter(|p| p.len() == bare_len)
        .ok_or_else(|| {
            KeyError::Unsupported(format!("CKA_EC_POINT of unexpected length {}", point.len()))
        })
}

/// Reads the protection attributes of a private key.
pub(crate) fn read_protection(
    session: &Session,
    token: &str,
    private: ObjectHandle,
) -> Result<KeyProtection> {
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Local,
            ],
        )
        .map_err(|e| op_error(token, "C_GetAttributeValue", &e))?;
    let mut p = KeyProtection {
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
        local: false,
    };
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => p.sensitive = v,
            Attribute::Extractable(v) => p.extractable = v,
            Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
            Attribute::NeverExtractable(v) => p.never_extractable = v,
            Attribute::Local(v) => p.local = v,
            _ => {}
        }
    }
    Ok(p)
}

/// `DigestInfo` for SHA-256, for tokens that only offer raw `CKM_RSA_PKCS`.
fn sha256_digest_info(message: &[u8]) -> Vec<u8> {
    let hash = digest::digest(&digest::SHA256, message);
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(&[
                        2, 16, 840, 1, 101, 3, 4, 2, 1,
                    ]));
                w.next().write_null();
            });
            w.next().write_bytes(hash.as_ref());
        })
    })
}

impl Pkcs11Key {
    /// Opens the key named by `uri` (object label and/or id) on its token.
    pub fn open(uri: &Pkcs11Uri, pool_size: usize) -> Result<Pkcs11Key> {
        if uri.object.is_none() && uri.id.is_none() {
            return Err(KeyError::InvalidUri {
                uri: uri.to_string(),
                problem: "name the key with object= (label) or id=".into(),
            });
        }
        let token = Token::get(uri, pool_size)?;
        let template = object_template(
            ObjectClass::PRIVATE_KEY,
            uri.object.as_deref(),
            uri.id.as_deref(),
        );
        let lookup = |lease: &Lease<'_>| {
            let Some(handle) = find_one(
                lease.session(),
                token.name(),
                &template,
                &uri.object_description(),
            )?
            else {
                return Ok(None);
            };
            let (algorithm, spki) = read_public_key(
                lease.session(),
                token.name(),
                handle,
                uri.object.as_deref(),
                uri.id.as_deref(),
            )?;
            let pss = algorithm.is_rsa()
                && (lease.has_mechanism(MechanismType::SHA256_RSA_PKCS_PSS)
                    || lease.has_mechanism(MechanismType::RSA_PKCS_PSS));
            Ok(Some((handle, algorithm, spki, lease.generation(), pss)))
        };
        let found = match token.run(lookup)? {
            Some(found) => Some(found),
            // Some modules read their object store once, at C_Initialize (tpm2-pkcs11): a
            // key another process created since is invisible until the module is
            // initialised again. Once per lookup, then "not found" stands.
            None => {
                token.reread_objects(&uri.object_description())?;
                token.run(lookup)?
            }
        };
        let (handle, algorithm, spki, generation, pss) = found.ok_or_else(|| {
            KeyError::NotFound(format!(
                "{} on token {:?}",
                uri.object_description(),
                token.name()
            ))
        })?;
        let display = uri.without_pin_value();
        Ok(Pkcs11Key {
            token,
            uri: KeyUri::Pkcs11(display),
            label: uri.object.clone(),
            id: uri.id.clone(),
            algorithm,
            spki,
            handle: Mutex::new(Some((generation, handle))),
            last_result: Mutex::new(None),
            pss,
        })
    }

    /// The token the key lives on.
    pub fn token(&self) -> &Arc<Token> {
        &self.token
    }

    /// The key's protection attributes (sensitive, extractable, ...), read from the token.
    pub fn protection(&self) -> Result<KeyProtection> {
        self.with_handle(|lease, handle| {
            read_protection(lease.session(), self.token.name(), handle).map_err(Fail::Key)
        })
    }

    fn cached_handle(&self, generation: u64) -> Option<ObjectHandle> {
        let cached = *self.handle.lock().unwrap_or_else(|p| p.into_inner());
        cached.filter(|(g, _)| *g == generation).map(|(_, h)| h)
    }

    fn find_handle(&self, lease: &Lease<'_>) -> std::result::Result<ObjectHandle, Fail> {
        if let Some(h) = self.cached_handle(lease.generation()) {
            return Ok(h);
        }
        let template = object_template(
            ObjectClass::PRIVATE_KEY,
            self.label.as_deref(),
            self.id.as_deref(),
        );
        let found = lease
            .session()
            .find_objects(&template)
            .map_err(Fail::ck("C_FindObjects"))?;
        let handle = match found.as_slice() {
            [h] => *h,
            [] => {
                return Err(Fail::Key(KeyError::NotFound(format!(
                    "{} on token {:?} (after reconnect)",
                    self.uri,
                    self.token.name()
                ))));
            }
            many => {
                return Err(Fail::Key(KeyError::Unsupported(format!(
                    "{} objects match {} on token {:?}; add id= to the URI to pick one",
                    many.len(),
                    self.uri,
                    self.token.name()
                ))));
            }
        };
        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = Some((lease.generation(), handle));
        Ok(handle)
    }

    /// Runs `op` with a session and the key's handle, recovering from lost connections and
    /// failing tokens as [`Token::run`] describes (handles are looked up again after every
    /// reconnect).
    fn with_handle<T>(
        &self,
        op: impl Fn(&Lease<'_>, ObjectHandle) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        self.token.run(|lease| {
            let handle = self.find_handle(lease)?;
            op(lease, handle)
        })
    }

    /// Signs the fixed probe message and checks the signature against the public key,
    /// at most once per [`PROBE_WINDOW`]; inside the window the last result (of a probe or
    /// of a real signature) is reused.
    fn probe(&self) -> bool {
        let last = *self.last_result.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, ok)) = last
            && at.elapsed() < PROBE_WINDOW
        {
            return ok;
        }
        let ok = match self.sign(PROBE_MESSAGE) {
            Ok(signature) => match spki::verify(&self.spki, PROBE_MESSAGE, &signature) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(key = %self.uri, error = %e, "probe signature does not verify");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(key = %self.uri, error = %e, "probe signature failed");
                false
            }
        };
        self.remember(ok);
        ok
    }

    fn remember(&self, ok: bool) {
        *self.last_result.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
    }

    fn sign_on(
        &self,
        lease: &Lease<'_>,
        handle: ObjectHandle,
        message: &[u8],
    ) -> std::result::Result<Vec<u8>, Fail> {
        let session = lease.session();
        let fail = Fail::ck("C_Sign");
        match self.algorithm {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                if lease.has_mechanism(MechanismType::SHA256_RSA_PKCS) {
                    session
                        .sign(&Mechanism::Sha256RsaPkcs, handle, message)
                        .map_err(fail)
                } else {
                    session
                        .sign(&Mechanism::RsaPkcs, handle, &sha256_digest_info(message))
                        .map_err(fail)
                }
            }
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let (on_token, mech, hash) = if self.algorithm == KeyAlgorithm::EcdsaP256 {
                    (
                        MechanismType::ECDSA_SHA256,
                        Mechanism::EcdsaSha256,
                        &digest::SHA256,
                    )
                } else {
                    (
                        MechanismType::ECDSA_SHA384,
                        Mechanism::EcdsaSha384,
                        &digest::SHA384,
                    )
                };
                let raw = if lease.has_mechanism(on_token) {
                    session.sign(&mech, handle, message).map_err(fail)?
                } else {
                    let d = digest::digest(hash, message);
                    session
                        .sign(&Mechanism::Ecdsa, handle, d.as_ref())
                        .map_err(fail)?
                };
                let expected = self.algorithm.ec_scalar_len().map(|n| 2 * n);
                if Some(raw.len()) != expected {
                    return Err(Fail::Key(KeyError::Crypto(format!(
                        "token returned an ECDSA signature of {} bytes",
                        raw.len()
                    ))));
                }
                Ok(spki::ecdsa_raw_to_der(&raw)?)
            }
        }
    }
}

/// RSASSA-PSS parameters of TLS's `rsa_pss_rsae_sha256`: SHA-256, MGF1-SHA-256, 32-byte salt.
fn pss_sha256_params() -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32u64.into(),
    }
}

impl Pkcs11Key {
    fn sign_pss_on(
        &self,
        lease: &Lease<'_>,
        handle: ObjectHandle,
        message: &[u8],
    ) -> std::result::Result<Vec<u8>, Fail> {
        let session = lease.session();
        let fail = Fail::ck("C_Sign");
        if lease.has_mechanism(MechanismType::SHA256_RSA_PKCS_PSS) {
            session
                .sign(
                    &Mechanism::Sha256RsaPkcsPss(pss_sha256_params()),
                    handle,
                    message,
                )
                .map_err(fail)
        } else {
            let d = digest::digest(&digest::SHA256, message);
            session
                .sign(
                    &Mechanism::RsaPkcsPss(pss_sha256_params()),
                    handle,
                    d.as_ref(),
                )
                .map_err(fail)
        }
    }
}

impl Signer for Pkcs11Key {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn uri(&self) -> &KeyUri {
        &self.uri
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let result = self.with_handle(|lease, handle| self.sign_on(lease, handle, message));
        match &result {
            Ok(_) => self.remember(true),
            Err(e) if e.is_unavailable() => self.remember(false),
            Err(_) => {}
        }
        result
    }

    fn concurrency_gate(&self) -> Option<&tokio::sync::Semaphore> {
        Some(self.token.gate())
    }

    fn supports_rsa_pss(&self) -> bool {
        self.pss
    }

    fn sign_rsa_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>> {
        if !self.pss {
            return Err(KeyError::Unsupported(format!(
                "{}: token {:?} lists no RSASSA-PSS mechanism",
                self.uri,
                self.token.name()
            )));
        }
        let result = self.with_handle(|lease, handle| self.sign_pss_on(lease, handle, message));
        match &result {
            Ok(_) => self.remember(true),
            Err(e) if e.is_unavailable() => self.remember(false),
            Err(_) => {}
        }
        result
    }

    /// True when the key signed (and the signature verified) within the last
    /// [`PROBE_WINDOW`], signing the probe message now if it has not.
    fn is_available(&self) -> bool {
        self.probe()
    }
}
