//! `INTERCEPTORS_TLS=self-signed`: a certificate for localhost, 127.0.0.1 and ::1 generated at
//! start, offered with ALPN h2 and http/1.1. The crypto provider (ring) is chosen here rather than
//! process-wide, so another crate enabling another provider can never make the builder panic.

use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The generated certificate (clients that verify can trust it) and the server's TLS settings.
#[derive(Clone)]
pub struct SelfSigned {
    pub certificate: CertificateDer<'static>,
    pub config: RustlsConfig,
}

pub fn self_signed() -> anyhow::Result<SelfSigned> {
    let certified = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(SelfSigned {
        certificate: certified.cert.der().clone(),
        config: RustlsConfig::from_config(Arc::new(config)),
    })
}
