//! Making many keys at once: software keys generated on every core while token keys are
//! generated on their tokens, each returned with where it will live.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kpki_signer::{KeyAlgorithm, KeyError, KeyUri, Signer};
use kpki_soft::SoftKey;
use zeroize::Zeroizing;

use crate::PkiError;
use crate::keystore::KeyStore;
use crate::store::{self, PRIVATE_MODE};

/// A key made by this run, not yet stored.
pub(crate) enum NewKey {
    /// A software key with its PEM, written to its file by [`NewKey::persist`].
    Soft(Box<SoftKey>, Zeroizing<String>),
    /// A key already generated on its token.
    Token(Arc<dyn Signer>),
}

impl NewKey {
    /// Writes a software key to its file (0600, never replacing one) and returns the signer.
    pub(crate) fn persist(self) -> Result<Arc<dyn Signer>, PkiError> {
        match self {
            NewKey::Token(k) => Ok(k),
            NewKey::Soft(key, pem) => {
                let path = key
                    .uri()
                    .as_file()
                    .ok_or_else(|| PkiError::internal("software key without a file"))?
                    .to_path_buf();
                store::create(&path, pem.as_bytes(), PRIVATE_MODE)?;
                Ok(Arc::new(*key))
            }
        }
    }
}

/// Creates one key per target, in target order: token keys on their tokens (one thread)
/// while software keys are generated on every core, each worker taking the next target.
pub(crate) fn create_keys(
    keys: &KeyStore,
    algorithm: KeyAlgorithm,
    targets: Vec<KeyUri>,
) -> Result<Vec<NewKey>, PkiError> {
    let soft: Vec<(usize, &KeyUri)> = targets
        .iter()
        .enumerate()
        .filter(|(_, u)| !u.is_pkcs11())
        .collect();
    let token: Vec<(usize, &KeyUri)> = targets
        .iter()
        .enumerate()
        .filter(|(_, u)| u.is_pkcs11())
        .collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .min(soft.len())
        .max(1);
    let (token_keys, soft_keys) = std::thread::scope(|scope| {
        // One thread per token; keys on the same token are made one after another (SoftHSM's
        // store fails concurrent key generation on one token with CKR_GENERAL_ERROR).
        let mut per_token: Vec<(String, Vec<(usize, &KeyUri)>)> = Vec::new();
        for (i, uri) in &token {
            let name = match uri {
                KeyUri::Pkcs11(u) => u.token_only().without_pin_value().to_string(),
                KeyUri::File(_) => String::new(),
            };
            match per_token.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push((*i, *uri)),
                None => per_token.push((name, vec![(*i, *uri)])),
            }
        }
        let token_threads: Vec<_> = per_token
            .into_iter()
            .map(|(_, list)| {
                scope.spawn(move || {
                    list.into_iter()
                        .map(|(i, uri)| keys.create(uri, algorithm).map(|k| (i, NewKey::Token(k))))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let soft_threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut made = Vec::new();
                    while let Some((i, uri)) = soft.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let (key, pem) = SoftKey::generate((*uri).clone(), algorithm)?;
                        made.push((*i, NewKey::Soft(Box::new(key), pem)));
                    }
                    Ok::<_, KeyError>(made)
                })
            })
            .collect();
        let join_err = || PkiError::internal("key generation thread panicked");
        let mut token_keys = Vec::new();
        for t in token_threads {
            token_keys.push(t.join().map_err(|_| join_err())?);
        }
        let mut soft_keys = Vec::new();
        for t in soft_threads {
            soft_keys.push(t.join().map_err(|_| join_err())?);
        }
        Ok::<_, PkiError>((token_keys, soft_keys))
    })?;
    let mut slots: Vec<Option<NewKey>> = (0..targets.len()).map(|_| None).collect();
    for (i, key) in token_keys
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .chain(
            soft_keys
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten(),
        )
    {
        slots[i] = Some(key);
    }
    slots
        .into_iter()
        .map(|k| k.ok_or_else(|| PkiError::internal("key creation came up short")))
        .collect()
}
