//! Signed checkpoints of the audit chain.
//!
//! A line's hashes carry no secret: whoever can write the file can rewrite it from any line
//! with fresh hashes. A checkpoint closes that gap. Every [`Checkpointer::every`] lines, and in
//! the `close` record of a clean stop, the writer signs the chain head with a dedicated key
//! (any key URI the [`kpki_signer::Signer`] backends open: a token key, or a file):
//!
//! ```text
//! {"seq":1001,"prev":"<hash of line 1000>","time":"…","event":"checkpoint","checkpoint":{"key":"<SPKI SHA-256>","sig":"<hex>"},"hash":"…"}
//! ```
//!
//! The signature covers [`message`]: the record's `event`, `seq`, `prev` and `time`. `prev`
//! is the hash of the line before, which chains every earlier line, so a valid checkpoint at
//! line *n* anchors lines 1 to *n*. A signed record carries no other field (none would be
//! covered). `key` is the lowercase hex SHA-256 of the signing key's SubjectPublicKeyInfo.
//!
//! [`CheckpointKey`] (a certificate or public key given to `kpki audit verify --key`) checks
//! them: a line changed and every hash after it recomputed fails at the next checkpoint; a
//! checkpoint re-signed with another key names that key; the lines after the last checkpoint
//! are reported as not anchored. Signatures are made through the [`kpki_signer::Signer`] and
//! checked with aws-lc-rs ([`kpki_signer::spki::verify`]).

use std::sync::Arc;

use kpki_signer::{Signer, spki};
use serde::{Deserialize, Serialize};

use super::Event;

/// The signature of a checkpoint, as written in a line's `checkpoint` field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Lowercase hex SHA-256 of the signing key's SubjectPublicKeyInfo (DER).
    pub key: String,
    /// The signature over [`message`], lowercase hex (X.509 form: PKCS#1 v1.5 or DER ECDSA).
    pub sig: String,
}

/// The bytes a checkpoint signs: its record's `event`, `seq`, `prev` and `time`, one per LF
/// ended line after a fixed first line.
pub fn message(event: Event, seq: u64, prev: &str, time: &str) -> Vec<u8> {
    format!("kpki audit checkpoint v1\nevent={event}\nseq={seq}\nprev={prev}\ntime={time}\n")
        .into_bytes()
}

/// Default number of lines between two checkpoints.
pub const DEFAULT_EVERY: u64 = 1000;

/// The writer's side: the key that signs checkpoints and how often.
#[derive(Clone, Debug)]
pub struct Checkpointer {
    signer: Arc<dyn Signer>,
    key: String,
    every: u64,
}

impl Checkpointer {
    /// Checkpoints signed by `signer` after every `every` lines (at least 1).
    pub fn new(signer: Arc<dyn Signer>, every: u64) -> Checkpointer {
        Checkpointer {
            key: spki::sha256_hex(signer.public_key_spki()),
            signer,
            every: every.max(1),
        }
    }

    /// Lines written between two checkpoints.
    pub fn every(&self) -> u64 {
        self.every
    }

    /// The signing key's fingerprint (lowercase hex SHA-256 of its SubjectPublicKeyInfo).
    pub fn key_id(&self) -> &str {
        &self.key
    }

    /// Signs the record `event` at `seq` after `prev`, time `time`. May block on a token.
    pub fn sign(
        &self,
        event: Event,
        seq: u64,
        prev: &str,
        time: &str,
    ) -> Result<Checkpoint, String> {
        let sig = self
            .signer
            .sign(&message(event, seq, prev, time))
            .map_err(|e| format!("checkpoint key {}: {e}", self.signer.uri()))?;
        Ok(Checkpoint {
            key: self.key.clone(),
            sig: hex::encode(sig),
        })
    }
}

/// The verifier's side: the public key checkpoints must be signed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointKey {
    spki: Vec<u8>,
    id: String,
}

impl CheckpointKey {
    /// The key in a PEM `CERTIFICATE` (its subject public key) or `PUBLIC KEY` block.
    pub fn from_pem(pem_text: &[u8]) -> Result<CheckpointKey, String> {
        let block = pem::parse(pem_text)
            .map_err(|_| "not PEM (expected a CERTIFICATE or PUBLIC KEY block)".to_string())?;
        let spki = match block.tag() {
            "PUBLIC KEY" => block.contents().to_vec(),
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
                    .map_err(|e| format!("not a valid certificate ({e})"))?;
                cert.public_key().raw.to_vec()
            }
            other => {
                return Err(format!(
                    "expected a CERTIFICATE or PUBLIC KEY PEM block, got {other}"
                ));
            }
        };
        CheckpointKey::from_spki(spki)
    }

    /// The key with the SubjectPublicKeyInfo DER `spki`.
    pub fn from_spki(spki: Vec<u8>) -> Result<CheckpointKey, String> {
        spki::algorithm_of(&spki).map_err(|e| e.to_string())?;
        Ok(CheckpointKey {
            id: spki::sha256_hex(&spki),
            spki,
        })
    }

    /// The key's fingerprint (lowercase hex SHA-256 of its SubjectPublicKeyInfo).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Checks `checkpoint` on the record `event` at `seq` after `prev`, time `time`; the
    /// error says what is wrong in one line.
    pub fn check(
        &self,
        checkpoint: &Checkpoint,
        event: Event,
        seq: u64,
        prev: &str,
        time: &str,
    ) -> Result<(), String> {
        if checkpoint.key != self.id {
            return Err(format!(
                "the checkpoint is signed by key {}, not by the given key {} (the checkpoint key was swapped)",
                short(&checkpoint.key),
                short(&self.id)
            ));
        }
        let sig = hex::decode(&checkpoint.sig)
            .map_err(|_| "the checkpoint's signature is not hex".to_string())?;
        spki::verify(&self.spki, &message(event, seq, prev, time), &sig)
            .map_err(|_| "the checkpoint's signature does not verify".to_string())
    }
}

/// The first 16 hex digits of a fingerprint (enough to tell keys apart in a message).
fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use kpki_signer::KeyAlgorithm;

    use super::*;

    /// A new file key of `algorithm` and a self-signed certificate of it (PEM).
    fn signer_and_cert(algorithm: KeyAlgorithm) -> (Arc<dyn Signer>, String) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kpki-checkpoint-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uri: kpki_signer::KeyUri = format!("file:{}/k.key", dir.display()).parse().unwrap();
        let keys = kpki_pki::keystore::KeyStore::default();
        let ca = kpki_pki::ca::NewCa {
            cn: "audit-checkpoints".into(),
            key: uri.clone(),
            algorithm,
            validity: std::time::Duration::from_secs(3600),
            cert: dir.join("k.crt"),
        };
        kpki_pki::ca::create(&keys, &ca).unwrap();
        let key = keys.open(&uri).unwrap();
        let cert = std::fs::read_to_string(dir.join("k.crt")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (key, cert)
    }

    fn signer(algorithm: KeyAlgorithm) -> Arc<dyn Signer> {
        signer_and_cert(algorithm).0
    }

    fn key_of(s: &Arc<dyn Signer>) -> CheckpointKey {
        CheckpointKey::from_spki(s.public_key_spki().to_vec()).unwrap()
    }

    const PREV: &str = "5d41402abc4b2a76b9719d911017c592ffffffffffffffffffffffffffffffff";

    #[test]
    fn checkpoints_verify_with_their_key_only() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let s = signer(algorithm);
            let other = signer(KeyAlgorithm::EcdsaP384);
            let c = Checkpointer::new(Arc::clone(&s), 0);
            assert_eq!(c.every(), 1);
            let t = "2026-11-29T20:00:00Z";
            let cp = c.sign(Event::Checkpoint, 7, PREV, t).unwrap();
            assert_eq!(cp.key, c.key_id());
            let key = key_of(&s);
            key.check(&cp, Event::Checkpoint, 7, PREV, t).unwrap();
            // (what changes, error fragment)
            let prev2 = PREV.replace('5', "6");
            let rows: [(Event, u64, &str, &str, &str); 4] = [
                (Event::Close, 7, PREV, t, "does not verify"),
                (Event::Checkpoint, 8, PREV, t, "does not verify"),
                (Event::Checkpoint, 7, &prev2, t, "does not verify"),
                (
                    Event::Checkpoint,
                    7,
                    PREV,
                    "2026-11-29T20:00:01Z",
                    "does not verify",
                ),
            ];
            for (event, seq, prev, time, want) in rows {
                let e = key.check(&cp, event, seq, prev, time).unwrap_err();
                assert!(e.contains(want), "{event} {seq} {prev} {time}: {e}");
            }
            let e = key_of(&other)
                .check(&cp, Event::Checkpoint, 7, PREV, t)
                .unwrap_err();
            assert!(e.contains("the checkpoint key was swapped"), "{e}");
            let bad = Checkpoint {
                sig: "zz".into(),
                ..cp.clone()
            };
            let e = key.check(&bad, Event::Checkpoint, 7, PREV, t).unwrap_err();
            assert_eq!(e, "the checkpoint's signature is not hex");
        }
    }

    #[test]
    fn checkpoint_keys_come_from_certificates_or_public_keys() {
        let (s, ca) = signer_and_cert(KeyAlgorithm::EcdsaP256);
        let spki_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", s.public_key_spki().to_vec()));
        assert_eq!(
            CheckpointKey::from_pem(spki_pem.as_bytes()).unwrap(),
            key_of(&s)
        );
        assert_eq!(CheckpointKey::from_pem(ca.as_bytes()).unwrap(), key_of(&s));
        let rows: [(&str, &str); 3] = [
            ("nothing", "not PEM"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "expected a CERTIFICATE or PUBLIC KEY PEM block, got PRIVATE KEY",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "not a valid certificate",
            ),
        ];
        for (text, want) in rows {
            let e = CheckpointKey::from_pem(text.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
