//! `tls_server_config`: the server certificate, client certificates and TLS versions, built
//! into a rustls server configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{WebConfigError, invalid, reject_present};

/// `tls_server_config.client_auth_type`, as Go's `tls.ClientAuthType` names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    NoClientCert,
    /// A certificate is asked for; none, or any, is accepted.
    RequestClientCert,
    /// A certificate is required; any is accepted.
    RequireAnyClientCert,
    /// A certificate is asked for; if given, it must verify against `client_ca_file`.
    VerifyClientCertIfGiven,
    /// A certificate is required and must verify against `client_ca_file`.
    RequireAndVerifyClientCert,
}

/// `tls_server_config.min_version` / `max_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    fn parse(key: &str, value: &str) -> Result<TlsVersion, WebConfigError> {
        match value {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(WebConfigError::Unsupported {
                key: key.to_string(),
                why: "TLS 1.0 and 1.1 are obsolete and rustls does not offer them; use TLS12 or TLS13",
            }),
            other => Err(invalid(
                key,
                format!("{other:?} is not one of TLS12, TLS13"),
            )),
        }
    }

    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// `tls_server_config` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsServerFile {
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    client_auth_type: Option<ClientAuth>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    // Known to exporter-toolkit, not honoured here: named in an error when present.
    #[serde(default)]
    cipher_suites: Option<IgnoredAny>,
    #[serde(default)]
    curve_preferences: Option<IgnoredAny>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<IgnoredAny>,
    #[serde(default)]
    client_allowed_sans: Option<IgnoredAny>,
}

const KEY: &str = "tls_server_config";

impl TlsServerFile {
    /// The rustls configuration; every file read is added to `sources`. Relative paths are
    /// relative to `base`.
    pub(super) fn build(
        &self,
        base: &Path,
        sources: &mut Vec<PathBuf>,
    ) -> Result<rustls::ServerConfig, WebConfigError> {
        reject_present(
            &self.cipher_suites,
            "tls_server_config.cipher_suites",
            "rustls offers only modern cipher suites and chooses among them itself; remove the key",
        )?;
        reject_present(
            &self.curve_preferences,
            "tls_server_config.curve_preferences",
            "rustls chooses the key exchange groups itself; remove the key",
        )?;
        reject_present(
            &self.prefer_server_cipher_suites,
            "tls_server_config.prefer_server_cipher_suites",
            "rustls always applies its own cipher suite order; remove the key",
        )?;
        reject_present(
            &self.client_allowed_sans,
            "tls_server_config.client_allowed_sans",
            "client certificates are checked against client_ca_file only; remove the key",
        )?;

        let mut read = |key: &str, path: &Path| -> Result<Vec<u8>, WebConfigError> {
            let path = base.join(path);
            let bytes = std::fs::read(&path).map_err(|source| WebConfigError::Read {
                path: path.clone(),
                key: format!("{KEY}.{key}"),
                source,
            })?;
            sources.push(path);
            Ok(bytes)
        };
        let cert_pem = match (&self.cert_file, &self.cert) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{KEY}.cert"),
                    "give either cert_file or cert, not both",
                ));
            }
            (Some(path), None) => read("cert_file", path)?,
            (None, Some(inline)) => inline.as_bytes().to_vec(),
            (None, None) => {
                return Err(invalid(
                    format!("{KEY}.cert_file"),
                    "a certificate is required (cert_file or cert)",
                ));
            }
        };
        let key_pem = match (&self.key_file, &self.key) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{KEY}.key"),
                    "give either key_file or key, not both",
                ));
            }
            (Some(path), None) => read("key_file", path)?,
            (None, Some(inline)) => inline.as_bytes().to_vec(),
            (None, None) => {
                return Err(invalid(
                    format!("{KEY}.key_file"),
                    "a private key is required (key_file or key)",
                ));
            }
        };
        let cert_key = if self.cert_file.is_some() {
            "cert_file"
        } else {
            "cert"
        };
        let key_key = if self.key_file.is_some() {
            "key_file"
        } else {
            "key"
        };
        let chain = certificates(&format!("{KEY}.{cert_key}"), &cert_pem)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| {
            invalid(
                format!("{KEY}.{key_key}"),
                format!("no PEM private key: {err}"),
            )
        })?;

        let client_auth = self.client_auth_type.unwrap_or_default();
        let client_roots = match &self.client_ca_file {
            Some(path) => {
                let key = format!("{KEY}.client_ca_file");
                let pem = read("client_ca_file", path)?;
                let mut roots = RootCertStore::empty();
                for cert in certificates(&key, &pem)? {
                    roots
                        .add(cert)
                        .map_err(|err| invalid(&key, format!("not a CA certificate: {err}")))?;
                }
                Some(Arc::new(roots))
            }
            None => None,
        };

        let min = match &self.min_version {
            Some(v) => TlsVersion::parse(&format!("{KEY}.min_version"), v)?,
            None => TlsVersion::Tls12,
        };
        let max = match &self.max_version {
            Some(v) => TlsVersion::parse(&format!("{KEY}.max_version"), v)?,
            None => TlsVersion::Tls13,
        };
        if min > max {
            return Err(invalid(
                format!("{KEY}.min_version"),
                "is above max_version",
            ));
        }
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            [TlsVersion::Tls12, TlsVersion::Tls13]
                .into_iter()
                .filter(|v| (min..=max).contains(v))
                .map(TlsVersion::rustls)
                .collect();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = client_verifier(client_auth, client_roots, &provider)?;
        rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|err| invalid(format!("{KEY}.min_version"), err.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private_key)
            .map_err(|err| {
                invalid(
                    format!("{KEY}.{key_key}"),
                    format!("the key does not fit the certificate: {err}"),
                )
            })
    }
}

/// Every certificate of a PEM text; at least one.
fn certificates(key: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|err| invalid(key, format!("not PEM certificates: {err}")))?;
    if certs.is_empty() {
        return Err(invalid(key, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The client certificate check of `client_auth`, as Go's `tls.ClientAuthType` defines it.
fn client_verifier(
    client_auth: ClientAuth,
    roots: Option<Arc<RootCertStore>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
    let key = format!("{KEY}.client_auth_type");
    let verifying = matches!(
        client_auth,
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
    );
    match (roots, verifying) {
        (Some(_), false) => Err(invalid(
            format!("{KEY}.client_ca_file"),
            format!(
                "is set but {client_auth:?} does not verify client certificates; use \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ),
        )),
        (None, true) => Err(invalid(
            key,
            format!("{client_auth:?} needs client_ca_file"),
        )),
        (Some(roots), true) => {
            let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let builder = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|err| invalid(format!("{KEY}.client_ca_file"), err.to_string()))
        }
        (None, false) => match client_auth {
            ClientAuth::RequestClientCert => Ok(Arc::new(AnyClientCert {
                mandatory: false,
                algorithms: provider.signature_verification_algorithms,
            })),
            ClientAuth::RequireAnyClientCert => Ok(Arc::new(AnyClientCert {
                mandatory: true,
                algorithms: provider.signature_verification_algorithms,
            })),
            _ => Ok(WebPkiClientVerifier::no_client_auth()),
        },
    }
}

/// Asks for a client certificate and accepts any (`RequestClientCert`,
/// `RequireAnyClientCert`): the client must still prove it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
