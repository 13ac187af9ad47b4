//! A client certificate, for TLS connections that authenticate by it (`EXTERNAL`): read
//! from its PEM files, with the name the broker takes from it.

use super::{BrokerSettings, ConnectError};

/// A client certificate: what TLS presents, and its common name.
pub(crate) struct Certificate {
    pub(crate) identity: lapin::tcp::OwnedIdentity,
    /// The subject's common name: the user RabbitMQ authenticates it as with
    /// `ssl_cert_login_from = common_name`.
    pub(crate) common_name: String,
}

/// The client certificate the settings name, if any.
pub(crate) fn client_identity(
    broker: &BrokerSettings,
) -> Result<Option<Certificate>, ConnectError> {
    let (cert_file, key_file) = (broker.tls_cert_file.as_str(), broker.tls_key_file.as_str());
    match (cert_file.is_empty(), key_file.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) | (true, false) => {
            return Err(
                "a TLS client certificate needs both broker.tls_cert_file and broker.tls_key_file"
                    .into(),
            );
        }
        (false, false) => {}
    }
    let read = |path: &str, what: &str| {
        std::fs::read(path)
            .map_err(|err| format!("cannot read the TLS client {what} {path}: {err}"))
    };
    let (pem, key) = (read(cert_file, "certificate")?, read(key_file, "key")?);
    let common_name = common_name(&pem)
        .map_err(|why| format!("the TLS client certificate {cert_file}: {why}"))?;
    Ok(Some(Certificate {
        identity: lapin::tcp::OwnedIdentity::PKCS8 { pem, key },
        common_name,
    }))
}

#[cfg(feature = "tls")]
fn common_name(pem: &[u8]) -> Result<String, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|err| format!("not a PEM certificate: {err}"))?;
    let certificate = pem
        .parse_x509()
        .map_err(|err| format!("not an X.509 certificate: {err}"))?;
    let name = certificate
        .subject()
        .iter_common_name()
        .next()
        .ok_or("its subject has no common name")?;
    name.as_str()
        .map(str::to_owned)
        .map_err(|err| format!("its common name is not text: {err}"))
}

#[cfg(not(feature = "tls"))]
fn common_name(_pem: &[u8]) -> Result<String, String> {
    Err("client certificates need guirpc-core's `tls` feature".into())
}
