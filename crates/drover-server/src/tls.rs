//! TLS for the listeners: the server's certificate chain and private key, read once from PEM
//! files when the server is built, into the rustls acceptor every listener shares.
//!
//! This module only loads and checks the files; the handshake itself is run by `serve.rs`, in
//! each connection's own task. Certificates are not reloaded while the server runs: a new
//! certificate takes a restart (with several replicas, one replica at a time).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Where the listeners' certificate chain and key are (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A TLS file that cannot be used; the message names the file and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS {what} {}: {reason}", path.display())]
pub struct TlsError {
    /// "certificate" or "key".
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

impl TlsError {
    fn cert(path: &Path, reason: impl Into<String>) -> Self {
        TlsError {
            what: "certificate",
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    fn key(path: &Path, reason: impl Into<String>) -> Self {
        TlsError {
            what: "key",
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Reads both files and builds the acceptor: TLS 1.2 and 1.3, no client certificates, HTTP/1.1
/// announced over ALPN (the listeners speak HTTP/1 only).
/// The certificate and key for the gRPC listener (tonic builds its own rustls config), once
/// [`acceptor`] has checked that they make a working one.
pub fn grpc_identity(files: &TlsFiles) -> Result<tonic::transport::Identity, TlsError> {
    acceptor(files)?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| TlsError::cert(path, format!("cannot read it: {e}")))
    };
    Ok(tonic::transport::Identity::from_pem(
        read(&files.cert)?,
        read(&files.key)?,
    ))
}

pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = std::fs::read(&files.cert)
        .map_err(|e| TlsError::cert(&files.cert, format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::cert(&files.cert, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::cert(
            &files.cert,
            "holds no certificate (no -----BEGIN CERTIFICATE----- block)",
        ));
    }
    let key_pem = std::fs::read(&files.key)
        .map_err(|e| TlsError::key(&files.key, format!("cannot read it: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError::key(
            &files.key,
            format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::cert(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::key(
                &files.key,
                format!(
                    "cannot be used with the certificate in {}: {e}",
                    files.cert.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertifiedKey, generate_simple_self_signed};

    /// A certificate and its key in `dir`, and a second key that is not its.
    fn files(dir: &Path) -> (TlsFiles, PathBuf) {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let CertifiedKey { cert, signing_key } =
            generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        (
            TlsFiles {
                cert: write("cert.pem", cert.pem()),
                key: write("key.pem", signing_key.serialize_pem()),
            },
            write("other-key.pem", other.serialize_pem()),
        )
    }

    #[test]
    fn a_certificate_and_its_key_make_an_acceptor() {
        let dir = tempfile::tempdir().unwrap();
        let (good, _) = files(dir.path());
        assert!(acceptor(&good).is_ok());
    }

    #[test]
    fn each_unusable_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (good, other_key) = files(dir.path());
        let fails = |files: TlsFiles| match acceptor(&files) {
            Ok(_) => panic!("{files:?} accepted"),
            Err(e) => e.to_string(),
        };

        let missing = dir.path().join("missing.pem");
        let e = fails(TlsFiles {
            cert: missing.clone(),
            ..good.clone()
        });
        assert!(
            e.starts_with(&format!(
                "TLS certificate {}: cannot read it",
                missing.display()
            )),
            "{e}"
        );

        let e = fails(TlsFiles {
            cert: good.key.clone(),
            ..good.clone()
        });
        assert!(e.contains("holds no certificate"), "{e}");

        let e = fails(TlsFiles {
            key: good.cert.clone(),
            ..good.clone()
        });
        assert!(
            e.starts_with(&format!(
                "TLS key {}: holds no PEM private key",
                good.cert.display()
            )),
            "{e}"
        );

        let e = fails(TlsFiles {
            key: other_key.clone(),
            ..good.clone()
        });
        assert!(
            e.starts_with(&format!(
                "TLS key {}: cannot be used with the certificate",
                other_key.display()
            )),
            "{e}"
        );
    }
}
