//! Entry points for the coverage-guided fuzz targets in `fuzz/` (not an API: hidden from the
//! documentation). They run what the daemon does with a request body before any key is
//! touched: the JSON, the PEM, the CSR examination and the policy decision.

use kpki_pki::csr::{SignRequest, examine_for};
use kpki_pki::signers::KubeSigner;

use crate::api;
use crate::issue::Ask;
use crate::policy::{Caller, Policy};

/// Which endpoint a fuzzed body is sent to.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    /// `POST /v1/sign`.
    Sign,
    /// `POST /api/v1/cfssl/sign`.
    CfsslSign,
}

/// Reads `body` as `endpoint` does; a request that parses is examined under its signer's
/// rules and decided by `policy` for `caller`.
#[doc(hidden)]
pub fn request(endpoint: Endpoint, body: &[u8], policy: &Policy, caller: &Caller) {
    let ask = match endpoint {
        Endpoint::Sign => api::sign_ask(body),
        Endpoint::CfsslSign => {
            api::cfssl_ask(body, kpki_pki::csr::KUBE_APISERVER_CLIENT.to_string())
        }
    };
    let Ok(Ask {
        csr_pem,
        signer,
        expiration_seconds,
        usages,
    }) = ask
    else {
        return;
    };
    let Ok(block) = pem::parse(csr_pem.as_bytes()) else {
        return;
    };
    let request = SignRequest {
        csr_der: block.into_contents(),
        signer_name: signer.clone(),
        usages,
        expiration_seconds,
        allow_system_masters: true,
    };
    if let Ok(examined) = examine_for(&KubeSigner::for_name(&signer), &request) {
        let validity = expiration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(std::time::Duration::from_secs);
        let _ = policy.decide(caller, &signer, &examined, validity);
    }
}

/// What the token signer's HTTP/2 `:authority` rewriter passes on to the server for a client
/// that sends `bytes` in reads of `step` bytes, or `None` when it ends the connection.
#[doc(hidden)]
pub fn jwt_authority(bytes: &[u8], step: usize) -> Option<Vec<u8>> {
    let mut rewriter = crate::jwt::authority::Rewriter::default();
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        rewriter.feed(piece, &mut out).ok()?;
    }
    Some(out)
}
