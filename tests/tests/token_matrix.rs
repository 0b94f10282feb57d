//! The acceptance suite on every PKCS#11 implementation of the matrix, one test per token
//! and check (`<token>::<check>`, e.g. `tpm2::outage_abrmd_restart`): conformance, a cluster
//! PKI with its CAs on the token, `kpki serve` under load, the JWT signer, concurrent
//! processes, and outages where the token can be stopped. Each test brings up its own
//! token through `hsm-test`; missing packages fail with the install hint, nothing is skipped.
#![allow(clippy::expect_used, clippy::unwrap_used)]

macro_rules! token_tests {
    ($($module:ident => $kind:expr;)*) => {$(
        mod $module {
            use kpki_e2e::hsm::matrix::TokenKind;
            use kpki_e2e::token_matrix::{cluster, conformance, contention, jwt, lookup};

            const KIND: TokenKind = $kind;

            #[test]
            fn conformance() {
                conformance::run(KIND);
            }

            #[test]
            fn init_renew_sign() {
                cluster::init_renew_sign(KIND);
            }

            #[test]
            fn serve_500_certificates_over_8_connections() {
                cluster::serve_500(KIND);
            }

            #[test]
            fn jwt_signer_200_tokens() {
                jwt::sign_200(KIND);
            }

            #[test]
            fn jwt_rotation_to_key_created_later() {
                let r = jwt::rotate_to_key_created_later(KIND);
                eprintln!(
                    "{}: rotation applied {:?} after SIGHUP; module re-read for the new key {} time(s); \
                     {} concurrent signatures, none failed",
                    KIND.name(),
                    r.applied_after,
                    r.reloads,
                    r.signed_during_reload
                );
            }

            #[test]
            fn missing_key_is_one_line_at_bounded_cost() {
                let t = lookup::missing_key_is_one_line(KIND);
                eprintln!(
                    "{}: kpki keys show median {:?} (present key), {:?} (missing key)",
                    KIND.name(),
                    t.present,
                    t.missing
                );
            }

            #[test]
            fn concurrent_kpki_sign_4x10() {
                contention::concurrent_sign(KIND);
            }

            #[test]
            fn concurrent_keys_create_4() {
                contention::concurrent_create(KIND);
            }
        }
    )*};
}

token_tests! {
    softhsm => TokenKind::SoftHsm;
    kryoptic => TokenKind::Kryoptic;
    opencryptoki => TokenKind::OpenCryptoki;
    tpm2 => TokenKind::Tpm2;
    nss => TokenKind::Nss;
}

/// Outages, for the tokens that can be taken away under a running daemon.
mod outage {
    use kpki_e2e::hsm::matrix::TokenKind;
    use kpki_e2e::token_matrix::outage::{Outage, run};

    #[test]
    fn softhsm_p11kit_server_restart() {
        run(TokenKind::SoftHsm, Outage::P11KitServer);
    }

    #[test]
    fn kryoptic_p11kit_server_restart() {
        run(TokenKind::Kryoptic, Outage::P11KitServer);
    }

    #[test]
    fn tpm2_abrmd_restart() {
        run(TokenKind::Tpm2, Outage::Abrmd);
    }

    #[test]
    fn tpm2_swtpm_and_abrmd_restart() {
        run(TokenKind::Tpm2, Outage::SwtpmAndAbrmd);
    }
}
