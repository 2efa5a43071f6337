//! Which HTTPS servers the client trusts: the bundled Mozilla roots (or, with
//! `platform-certs`, the system's), plus the certificates of a CA file
//! ([`ClientConfig::ca_file`](crate::ClientConfig::ca_file)), each checked when the client is
//! made; and what to tell the operator when a server's certificate is not trusted.

use std::path::Path;

use tracing::info;
#[cfg(feature = "platform-certs")]
use tracing::warn;

use crate::error::Error;

/// The roots to trust with a CA file: the file's certificates plus the bundled Mozilla roots,
/// or with `platform-certs` the system's.
pub(crate) fn root_certs_with(path: &Path) -> Result<ureq::tls::RootCerts, Error> {
    let extra = read_ca_file(path)?;
    let mut roots = base_roots();
    let (bundled, added) = (roots.len(), extra.len());
    roots.extend(extra);
    info!(
        ca_file = %path.display(),
        certificates = added,
        other_roots = bundled,
        "trusting the CA file's certificates for HTTPS"
    );
    Ok(ureq::tls::RootCerts::new_with_certs(&roots))
}

#[cfg(not(feature = "platform-certs"))]
fn base_roots() -> Vec<ureq::tls::Certificate<'static>> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()))
        .collect()
}

#[cfg(feature = "platform-certs")]
fn base_roots() -> Vec<ureq::tls::Certificate<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        warn!(error = %e, "reading the system's root certificates");
    }
    found
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect()
}

/// Every certificate of a PEM file, each checked to be usable as a trust anchor (rustls
/// would otherwise skip a bad one silently and every handshake would fail later).
fn read_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let fail = |reason: String| Error::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut certs = Vec::new();
    for (i, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| fail(format!("not valid PEM: {e}")))?;
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| {
                fail(format!(
                    "certificate {} is not a usable CA certificate: {e}",
                    i + 1
                ))
            })?;
        certs.push(ureq::tls::Certificate::from_der(der.as_ref()).to_owned());
    }
    if certs.is_empty() {
        return Err(fail(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

/// A TLS failure, with what to do about a certificate that is not trusted.
pub(crate) fn tls_message(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => format!(
            "TLS: {e}: the server's certificate is not signed by a trusted root; for a private \
             CA, trust its certificate with a CA file (ClientConfig::ca_file, BACKEND_CA_FILE)"
        ),
        _ => format!("TLS: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ca_file_adds_to_the_other_roots() {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let ca = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let path = std::env::temp_dir().join(format!("grafolean-ca-{}.pem", std::process::id()));
        std::fs::write(&path, ca.pem()).unwrap_or_else(|e| panic!("{e}"));
        let roots = root_certs_with(&path);
        let _ = std::fs::remove_file(&path);
        let base = base_roots();
        #[cfg(not(feature = "platform-certs"))]
        assert_eq!(base.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        match roots {
            Ok(ureq::tls::RootCerts::Specific(certs)) => {
                assert_eq!(certs.len(), base.len() + 1);
                assert_eq!(certs.last().map(|c| c.der()), Some(ca.der().as_ref()));
                assert!(certs.iter().zip(&base).all(|(a, b)| a.der() == b.der()));
            }
            other => panic!("expected specific roots, got {other:?}"),
        }
    }
}
