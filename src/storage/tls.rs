//! TLS for Tahoe's HTTP storage protocol: a rustls client config that trusts exactly one server key, the one
//! whose SubjectPublicKeyInfo hashes to the pin in the server's NURL.
//!
//! Tahoe nodes present self-signed X.509 **v1** certificates (made by Foolscap), which webpki refuses to
//! parse, so the stock verifier cannot be used: the certificate is parsed with x509-parser, its SPKI hashed
//! and compared with the pin, and the handshake signature is checked against that same key. The handshake
//! fails on a mismatch, before any request byte (which would carry the swissnum) is sent. Expiry, issuer and
//! host name are ignored, as Tahoe's own client ignores them: the pin is the only trust decision.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha1::Digest;

use crate::crypto::constant_time_eq;

/// What the verifier learnt about the server during the last successful handshake.
#[derive(Debug, Default)]
pub struct PeerCertificate {
    /// The DER of the server's certificate.
    pub der: Vec<u8>,
}

impl PeerCertificate {
    /// The Foolscap tub id of the server: SHA-1 of its certificate's DER. Tahoe derives lease secrets and
    /// write enablers from it, so a client that knows only the NURL learns it here.
    pub fn tubid(&self) -> [u8; 20] {
        sha1::Sha1::digest(&self.der).into()
    }
}

/// The SHA-256 of the SPKI of a DER certificate, as NURLs pin it; errors if the certificate cannot be parsed.
pub fn spki_hash(cert_der: &[u8]) -> Result<[u8; 32], String> {
    Ok(sha2::Sha256::digest(spki_of(cert_der)?).into())
}

fn spki_of(cert_der: &[u8]) -> Result<&[u8], String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("cannot parse the server's certificate: {e}"))?;
    Ok(cert.tbs_certificate.subject_pki.raw)
}

/// A certificate verifier that accepts exactly the server key with SPKI hash `pin`.
#[derive(Debug)]
pub struct PinnedKeyVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    /// Filled on each handshake that passes the pin check and whose signature the pinned key made.
    peer: PeerSlot,
}

impl PinnedKeyVerifier {
    pub fn new(pin: [u8; 32], provider: &CryptoProvider) -> PinnedKeyVerifier {
        PinnedKeyVerifier {
            pin,
            algorithms: provider.signature_verification_algorithms,
            peer: Arc::default(),
        }
    }

    /// Where the verifier records the certificate of the last server that passed the pin check.
    pub fn peer(&self) -> PeerSlot {
        Arc::clone(&self.peer)
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The pin was checked in verify_server_cert, but the signature must be made by the key that was pinned,
        // so it is checked against the SPKI of this same certificate.
        let spki = spki_of(cert.as_ref()).map_err(rustls::Error::General)?;
        let spki = SubjectPublicKeyInfoDer::from(spki);
        if tls13 {
            let valid = rustls::crypto::verify_tls13_signature_with_raw_key(
                message,
                &spki,
                dss,
                &self.algorithms,
            )?;
            self.record(cert);
            return Ok(valid);
        }
        let bad = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature);
        let key = webpki::RawPublicKeyEntity::try_from(&spki).map_err(|_| bad())?;
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algs)| *algs)
            .ok_or(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))?;
        for alg in candidates {
            if key.verify_signature(*alg, message, dss.signature()).is_ok() {
                self.record(cert);
                return Ok(HandshakeSignatureValid::assertion());
            }
        }
        Err(bad())
    }

    /// Records the certificate of a server that has proved it holds the pinned key. Not before: anyone can
    /// present a certificate around the pinned public key, and its bytes (which the tub id is the hash of) are
    /// then the presenter's choice.
    fn record(&self, cert: &CertificateDer<'_>) {
        *self.peer.lock().unwrap_or_else(|p| p.into_inner()) = Some(PeerCertificate {
            der: cert.as_ref().to_vec(),
        });
    }
}

impl ServerCertVerifier for PinnedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = spki_hash(end_entity.as_ref()).map_err(rustls::Error::General)?;
        if !constant_time_eq(&hash, &self.pin) {
            return Err(rustls::Error::General(format!(
                "the server's key does not match the NURL's pin (it presented key {}, the NURL expects {})",
                data_encoding::BASE64URL_NOPAD.encode(&hash),
                data_encoding::BASE64URL_NOPAD.encode(&self.pin)
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Where a verifier records the certificate of the last server that passed its pin check.
pub type PeerSlot = Arc<Mutex<Option<PeerCertificate>>>;

/// A client config for one server that trusts only `pin`. ALPN is left to the HTTP connector, which offers
/// `http/1.1` (Tahoe refuses a client that offers only `h2`).
pub fn client_config(pin: [u8; 32]) -> Result<(rustls::ClientConfig, PeerSlot), String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // TLS 1.3 with AES-128-GCM only (every TLS 1.3 server has it): a quarter less cipher work per byte than
    // AES-256, which Tahoe's servers (OpenSSL, server preference) pick whenever it is offered.
    provider.cipher_suites.retain(|suite| match suite {
        rustls::SupportedCipherSuite::Tls13(_) => {
            suite.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        }
        rustls::SupportedCipherSuite::Tls12(_) => true,
    });
    let provider = Arc::new(provider);
    let verifier = PinnedKeyVerifier::new(pin, &provider);
    let peer = verifier.peer();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, peer))
}
