//! The GBS client against a fake, hostile HTTPS server: malformed CBOR, truncated and oversized bodies, wrong
//! status codes and headers, silence, and a key that does not match the pin. Each must give an error that
//! names the server and the problem — never a panic, never a hang — and a pin mismatch must be refused before
//! any request byte is sent.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tahoe_mount::storage::gbs::{GbsOptions, GbsServer};
use tahoe_mount::storage::nurl::Nurl;
use tahoe_mount::storage::{StorageError, StorageIndex, StorageServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake server does with each request.
#[derive(Clone)]
enum Behaviour {
    /// Sends these bytes as the whole HTTP response, then closes.
    Reply(Vec<u8>),
    /// Sends these bytes, then keeps the connection open and silent.
    ReplyThenHang(Vec<u8>),
    /// Reads the request and never answers.
    Silent,
    /// Accepts TCP but never does TLS.
    NoTls,
}

struct FakeServer {
    nurl: String,
    /// Raw request bytes received after TLS, per connection.
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn certificate() -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["newpb_thingy".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (cert.der().to_vec(), key.serialize_der())
}

async fn start(behaviour: Behaviour) -> FakeServer {
    let (cert, key) = certificate();
    let pin = tahoe_mount::storage::tls::spki_hash(&cert).expect("spki");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.into()],
        tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let behaviour = behaviour.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                if let Behaviour::NoTls = behaviour {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(tcp);
                    return;
                }
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read until the end of the headers (bodies of these tests are small and ignored).
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().push(request);
                match behaviour {
                    Behaviour::Reply(bytes) => {
                        let _ = tls.write_all(&bytes).await;
                        let _ = tls.shutdown().await;
                    }
                    Behaviour::ReplyThenHang(bytes) => {
                        let _ = tls.write_all(&bytes).await;
                        let _ = tls.flush().await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Behaviour::Silent => tokio::time::sleep(Duration::from_secs(3600)).await,
                    Behaviour::NoTls => unreachable!(),
                }
            });
        }
    });
    let b64 = data_encoding::BASE64URL_NOPAD.encode(&pin);
    FakeServer {
        nurl: format!("pb://{b64}@127.0.0.1:{port}/swissnumswissnum#v=1"),
        requests,
    }
}

fn http(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn with_length(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    http(
        status,
        &[
            ("Content-Type", content_type.into()),
            ("Content-Length", body.len().to_string()),
        ],
        body,
    )
}

fn options() -> GbsOptions {
    GbsOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(800),
        read_retries: 1,
        max_cbor_reply: 4096,
        upload_chunk: 1 << 20,
    }
}

fn client(fake: &FakeServer) -> GbsServer {
    GbsServer::new(&fake.nurl.parse::<Nurl>().unwrap(), Some("fake"), options()).unwrap()
}

const SI: StorageIndex = StorageIndex([7; 16]);

#[tokio::test]
async fn malformed_cbor_is_a_protocol_error() {
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        b"\xff\xfe garbage",
    )))
    .await;
    let err = client(&fake).version().await.unwrap_err();
    assert!(matches!(err, StorageError::Protocol { .. }), "{err}");
    assert!(
        err.to_string().contains("fake") && err.to_string().contains("CBOR"),
        "{err}"
    );
    let err = client(&fake).list_immutable_shares(SI).await.unwrap_err();
    assert!(matches!(err, StorageError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn a_version_reply_without_its_fields_is_a_protocol_error() {
    // {"a": 1}: valid CBOR, wrong shape.
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        b"\xa1\x61a\x01",
    )))
    .await;
    let err = client(&fake).version().await.unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
}

#[tokio::test]
async fn truncated_body_is_an_error() {
    let reply = http(
        "200 OK",
        &[("Content-Length", "100".into())],
        b"\xd9\x01\x02\x82",
    );
    let fake = start(Behaviour::Reply(reply)).await;
    let err = client(&fake).list_immutable_shares(SI).await.unwrap_err();
    assert!(matches!(err, StorageError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn truncated_body_then_silence_times_out() {
    let reply = http(
        "200 OK",
        &[("Content-Length", "100".into())],
        b"\xd9\x01\x02\x82",
    );
    let fake = start(Behaviour::ReplyThenHang(reply)).await;
    let started = Instant::now();
    let err = client(&fake).list_immutable_shares(SI).await.unwrap_err();
    assert!(matches!(err, StorageError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let big = vec![0x80u8; 10_000];
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        &big,
    )))
    .await;
    let err = client(&fake).version().await.unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");

    // A share read may not return more than was asked for, even chunked and without Content-Range.
    let chunked = http(
        "200 OK",
        &[("Transfer-Encoding", "chunked".into())],
        b"400\r\n"
            .iter()
            .chain(&[b'x'; 1024])
            .chain(b"\r\n0\r\n\r\n")
            .copied()
            .collect::<Vec<u8>>()
            .as_slice(),
    );
    let fake = start(Behaviour::Reply(chunked)).await;
    let err = client(&fake)
        .read_immutable_share(SI, 0, 0, 10)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

#[tokio::test]
async fn wrong_status_codes_and_ranges_are_errors() {
    let fake = start(Behaviour::Reply(with_length(
        "418 I'm a teapot",
        "text/plain",
        b"short and stout",
    )))
    .await;
    let err = client(&fake).list_mutable_shares(SI).await.unwrap_err();
    assert!(
        matches!(err, StorageError::Http { status: 418, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("short and stout"), "{err}");

    let fake = start(Behaviour::Reply(with_length(
        "401 Unauthorized",
        "text/plain",
        b"Wrong Authorization header",
    )))
    .await;
    let err = client(&fake).version().await.unwrap_err();
    assert!(matches!(err, StorageError::Unauthorized { .. }), "{err}");

    // A 206 for a different range than asked.
    let fake = start(Behaviour::Reply(http(
        "206 Partial Content",
        &[
            ("Content-Range", "bytes 5-9/*".into()),
            ("Content-Length", "5".into()),
        ],
        b"hello",
    )))
    .await;
    let err = client(&fake)
        .read_immutable_share(SI, 1, 0, 5)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a prefix"), "{err}");

    // A 206 whose body disagrees with its Content-Range.
    let fake = start(Behaviour::Reply(http(
        "206 Partial Content",
        &[
            ("Content-Range", "bytes 0-9/*".into()),
            ("Content-Length", "5".into()),
        ],
        b"hello",
    )))
    .await;
    let err = client(&fake)
        .read_immutable_share(SI, 1, 0, 10)
        .await
        .unwrap_err();
    assert_short_body(&err);

    // A 206 with no Content-Range at all.
    let fake = start(Behaviour::Reply(with_length(
        "206 Partial Content",
        "application/octet-stream",
        b"hello",
    )))
    .await;
    let err = client(&fake)
        .read_immutable_share(SI, 1, 0, 5)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Content-Range"), "{err}");

    // A PATCH answered 200 with a set where a map belongs.
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        b"\xd9\x01\x02\x80",
    )))
    .await;
    let err = client(&fake)
        .write_share_chunk(SI, 0, b"secret", 0, bytes::Bytes::from_static(b"data"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Protocol { .. }), "{err}");

    // An allocation answered with a success code but no body.
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        b"",
    )))
    .await;
    let lease = tahoe_mount::storage::LeaseSecrets {
        renew: [1; 32],
        cancel: [2; 32],
    };
    let shares: BTreeSet<u16> = [0].into();
    let err = client(&fake)
        .allocate_buckets(SI, &shares, 10, lease, b"upload")
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Protocol { .. }), "{err}");

    // An allocation granting a share that was not asked for: it would count as placed and never be written.
    // {"already-have": set(), "allocated": set([0, 5])}
    let mut body = vec![0xa2, 0x6c];
    body.extend_from_slice(b"already-have");
    body.extend_from_slice(&[0xd9, 0x01, 0x02, 0x80, 0x69]);
    body.extend_from_slice(b"allocated");
    body.extend_from_slice(&[0xd9, 0x01, 0x02, 0x82, 0x00, 0x05]);
    let fake = start(Behaviour::Reply(with_length(
        "201 Created",
        "application/cbor",
        &body,
    )))
    .await;
    let err = client(&fake)
        .allocate_buckets(SI, &shares, 10, lease, b"upload")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not asked for"), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    for behaviour in [Behaviour::Silent, Behaviour::NoTls] {
        let fake = start(behaviour).await;
        let started = Instant::now();
        let err = client(&fake).version().await.unwrap_err();
        assert!(matches!(err, StorageError::Timeout { .. }), "{err}");
        // Two attempts (one retry) of 0.8 s each, plus a short back-off.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_key_that_does_not_match_the_pin_is_refused_before_sending() {
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        b"\xa0",
    )))
    .await;
    // Same address and swissnum, a different pin.
    let address = &fake.nurl[fake.nurl.find('@').unwrap()..];
    let wrong = format!("pb://{}{address}", "A".repeat(43));
    let server = GbsServer::new(&wrong.parse::<Nurl>().unwrap(), Some("fake"), options()).unwrap();
    let err = server.version().await.unwrap_err();
    assert!(matches!(err, StorageError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("pin"), "{err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let requests = fake.requests.lock().unwrap();
    assert!(
        requests.iter().all(|r| r.is_empty()),
        "request bytes reached the server: {requests:?}"
    );
}

#[tokio::test]
async fn the_right_pin_connects_and_sends_the_protocol_headers() {
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        b"\xd9\x01\x02\x82\x00\x03",
    )))
    .await;
    let server = client(&fake);
    let shares = server.list_immutable_shares(SI).await.unwrap();
    assert_eq!(shares, [0, 3].into());
    let raw = String::from_utf8_lossy(&fake.requests.lock().unwrap()[0]).into_owned();
    let text = raw.to_lowercase();
    assert!(
        text.starts_with(&format!("get /storage/v1/immutable/{SI}/shares http/1.1")),
        "{text}"
    );
    // base64("swissnumswissnum")
    assert!(text.contains("authorization: tahoe-lafs "), "{text}");
    assert!(raw.contains("Tahoe-LAFS c3dpc3NudW1zd2lzc251bQ=="), "{raw}");
    assert!(text.contains("accept: application/cbor"), "{text}");
    assert!(server.tubid().await.is_ok());
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let nurl = format!("pb://{}@127.0.0.1:{port}/swiss#v=1", "A".repeat(43));
    let server = GbsServer::new(&nurl.parse::<Nurl>().unwrap(), None, options()).unwrap();
    let started = Instant::now();
    let err = server.version().await.unwrap_err();
    assert!(matches!(err, StorageError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// This process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A version reply that is right in every field Tahoe defines, padded with an extra entry of `padding` empty
/// arrays: each is one byte on the wire and a 48-byte value once decoded.
fn amplifying_version(padding: usize) -> Vec<u8> {
    use ciborium::Value;
    let v1 = Value::Map(vec![
        (
            Value::Bytes(b"maximum-immutable-share-size".to_vec()),
            Value::Integer(1_000_000u64.into()),
        ),
        (
            Value::Bytes(b"maximum-mutable-share-size".to_vec()),
            Value::Integer(1_000_000u64.into()),
        ),
        (
            Value::Bytes(b"available-space".to_vec()),
            Value::Integer(1_000_000u64.into()),
        ),
    ]);
    let mut body = Vec::new();
    ciborium::into_writer(
        &Value::Map(vec![(
            Value::Bytes(b"http://allmydata.org/tahoe/protocols/storage/v1".to_vec()),
            v1,
        )]),
        &mut body,
    )
    .unwrap();
    // Turn the one-entry map into a two-entry one and append the padding entry: key 0 → [[], [], …].
    body[0] = 0xa2;
    body.extend_from_slice(&[0x00, 0x9a]);
    body.extend_from_slice(&u32::try_from(padding).unwrap().to_be_bytes());
    body.extend(std::iter::repeat_n(0x80, padding));
    body
}

/// A 20 MB reply of CBOR that decodes to a gigabyte must be refused before it is decoded (it once took the client
/// to 1–1.8 GiB): by its length, as no version reply needs 64 KiB, and by its count of items.
#[tokio::test]
async fn a_reply_that_decodes_to_gigabytes_is_refused_within_bounded_memory() {
    // The unpadded reply is good: the test's version reply is one the client accepts.
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        &amplifying_version(0),
    )))
    .await;
    let defaults = |fake: &FakeServer| {
        GbsServer::new(
            &fake.nurl.parse::<Nurl>().unwrap(),
            Some("fake"),
            GbsOptions::default(),
        )
        .unwrap()
    };
    let version = defaults(&fake)
        .version()
        .await
        .expect("a good version reply");
    assert_eq!(version.available_space, 1_000_000);

    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        &amplifying_version(20_000_000),
    )))
    .await;
    let before = peak_rss_kib();
    let err = defaults(&fake).version().await.unwrap_err();
    let grew_mib = (peak_rss_kib() - before) / 1024;
    assert!(matches!(err, StorageError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("longer than"), "{err}");
    assert!(grew_mib < 64, "the client grew by {grew_mib} MiB");

    // Within the length limit, the item count still refuses it.
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        &amplifying_version(50_000),
    )))
    .await;
    let err = defaults(&fake).version().await.unwrap_err();
    assert!(err.to_string().contains("CBOR items"), "{err}");
}

/// A server listing every share number there is gets refused: no storage index has more than 256 shares.
#[tokio::test]
async fn a_share_list_of_65536_shares_is_refused() {
    let mut body = vec![0xd9, 0x01, 0x02, 0x99, 0xff, 0xff]; // tag 258 (set), array of 65 535
    for n in 0u16..0xffff {
        body.push(0x19);
        body.extend_from_slice(&n.to_be_bytes());
    }
    let fake = start(Behaviour::Reply(with_length(
        "200 OK",
        "application/cbor",
        &body,
    )))
    .await;
    let server = GbsServer::new(
        &fake.nurl.parse::<Nurl>().unwrap(),
        Some("fake"),
        GbsOptions::default(),
    )
    .unwrap();
    let err = server.list_mutable_shares(SI).await.unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
}

/// Serves TLS with a certificate around `pinned`'s public key (made and signed by another key, so its bytes are
/// the server's choice) while signing the handshake with that other key: the server does not hold the pinned key.
async fn start_impostor(pinned: &rcgen::KeyPair) -> String {
    use tokio_rustls::rustls;
    let other = rcgen::KeyPair::generate().expect("key");
    let issuer = rcgen::Issuer::new(
        rcgen::CertificateParams::new(vec!["impostor".into()]).expect("params"),
        &other,
    );
    let mut params = rcgen::CertificateParams::new(vec!["newpb_thingy".into()]).expect("params");
    params.serial_number = Some(rcgen::SerialNumber::from(vec![0x5a; 8]));
    let cert = params.signed_by(pinned, &issuer).expect("cert");
    let pin = tahoe_mount::storage::tls::spki_hash(cert.der()).expect("spki");
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(
        &rustls::pki_types::PrivateKeyDer::Pkcs8(other.serialize_der().into()),
    )
    .expect("signing key");
    #[derive(Debug)]
    struct Always(Arc<rustls::sign::CertifiedKey>);
    impl rustls::server::ResolvesServerCert for Always {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }
    let certified = rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signer);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(Always(Arc::new(certified))));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    format!(
        "pb://{}@127.0.0.1:{port}/swissnumswissnum#v=1",
        data_encoding::BASE64URL_NOPAD.encode(&pin)
    )
}

/// A server that shows a certificate around the pinned public key but cannot sign with it must not leave that
/// certificate behind: its bytes would become the tub id that lease secrets and write enablers derive from.
#[tokio::test]
async fn an_impostor_with_the_pinned_public_key_leaves_no_tub_id() {
    let pinned = rcgen::KeyPair::generate().expect("key");
    let nurl = start_impostor(&pinned).await;
    let client =
        GbsServer::new(&nurl.parse::<Nurl>().unwrap(), Some("impostor"), options()).unwrap();
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, StorageError::Tls { .. }), "{err}");
    let err = client.tubid().await.unwrap_err();
    assert!(matches!(err, StorageError::Tls { .. }), "{err}");
}

/// Tahoe computes a mutable share's Content-Range before reading it, so a share rewritten meanwhile comes back
/// shorter than announced: such a mutable read is asked again (three times in all) before it is an error; an
/// immutable share never changes, so the first short reply is one.
#[tokio::test]
async fn a_short_mutable_share_read_is_asked_again() {
    let short = http(
        "206 Partial Content",
        &[
            ("Content-Range", "bytes 0-9/*".into()),
            ("Content-Length", "5".into()),
        ],
        b"hello",
    );
    let fake = start(Behaviour::Reply(short.clone())).await;
    let err = client(&fake)
        .read_mutable_share(SI, 1, 0, 10)
        .await
        .unwrap_err();
    assert_short_body(&err);
    assert_eq!(fake.requests.lock().unwrap().len(), 3);
    let fake = start(Behaviour::Reply(short)).await;
    client(&fake)
        .read_immutable_share(SI, 1, 0, 10)
        .await
        .unwrap_err();
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}

/// The error for a 206 announcing bytes 0-9 whose body holds 5: typed, and saying so in its message.
fn assert_short_body(err: &StorageError) {
    assert!(
        matches!(
            err,
            StorageError::ShortBody {
                announced: 10,
                received: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Content-Range says"), "{err}");
}
