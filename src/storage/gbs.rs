//! The HTTPS client for Tahoe-LAFS's HTTP storage protocol ("GBS", `allmydata/storage/http_client.py`): one
//! [`GbsServer`] per storage server, with its own pinned TLS config and keep-alive connection pool.
//!
//! Wire rules that matter (see `GBS.md`): every request carries `Authorization: Tahoe-LAFS <b64 swissnum>`;
//! secrets go in one `X-Tahoe-Authorization` line each, and an endpoint rejects missing *and* extra ones;
//! CBOR endpoints need `Accept: application/cbor`; sets are CBOR tag 258; ranges are inclusive. Replies are
//! bounded in time and size and checked before use, so a broken or hostile server yields a [`StorageError`],
//! never a panic or a hang.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, HeaderValue, RANGE};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::nurl::Nurl;
use super::replies::{
    self, AllocateResponse, PatchResponse, ReadTestWriteResponse, ShareSet, parse_version,
};
use super::tls::{self, PeerCertificate};
use super::{
    Allocation, LeaseSecrets, MutableSecrets, ReadTestWriteResult, ReadVector, ServerVersion,
    ShareNumber, StorageError, StorageFuture, StorageIndex, StorageServer, TestWriteVectors,
    UploadProgress,
};

const CBOR: &str = "application/cbor";
/// Error bodies are only for messages; longer ones are cut.
const MAX_ERROR_BODY: usize = 10_000;
/// 1.20 accepts a corruption reason of 1..=32765 characters.
const MAX_REASON: usize = 32_765;
/// Replies that list share numbers (at most 256, of up to 3 bytes each): list shares, allocate buckets.
const MAX_SMALL_REPLY: usize = 8 * 1024;
/// The version reply: a few dozen fields and an application version string.
const MAX_VERSION_REPLY: usize = 64 * 1024;
/// A read-test-write reply holds the read vector's bytes for each share the server holds (at most 256).
const MAX_SHARES_PER_SLOT: usize = 256;

/// Requests in flight to one server at once, so at most this many connections: a server that lists thousands
/// of shares, or a caller with much to do, queues here instead of opening a connection per request.
const MAX_CONNECTIONS: usize = 16;

/// Timeouts, retries and limits for one server.
#[derive(Clone, Debug)]
pub struct GbsOptions {
    /// TCP connect, per attempt.
    pub connect_timeout: Duration,
    /// A whole exchange: TLS handshake, request, and the full reply body.
    pub request_timeout: Duration,
    /// Extra attempts for reads that failed to connect or timed out (writes are retried only when the
    /// connection failed, when nothing can have reached the server).
    pub read_retries: u32,
    /// Largest CBOR reply accepted (Tahoe's own client allows 30 MiB).
    pub max_cbor_reply: usize,
    /// Immutable uploads are sent in PATCHes of at most this many bytes: each request costs the server a few
    /// milliseconds, so they should be large, but not so large that a retry repeats much.
    pub upload_chunk: usize,
}

impl Default for GbsOptions {
    fn default() -> GbsOptions {
        GbsOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            read_retries: 2,
            max_cbor_reply: 30 << 20,
            upload_chunk: 1 << 20,
        }
    }
}

/// A storage server reached over HTTPS at a NURL.
pub struct GbsServer {
    name: String,
    bases: Vec<String>,
    /// The hint that last worked; tried first.
    current: AtomicUsize,
    authorization: HeaderValue,
    client: Client<HttpsConnector<HttpConnector>, Pieces>,
    peer: tls::PeerSlot,
    options: GbsOptions,
    /// The last version the server sent, and when it arrived.
    last_version: std::sync::Mutex<Option<(Instant, ServerVersion)>>,
    /// One permit per request in flight ([`MAX_CONNECTIONS`]).
    in_flight: tokio::sync::Semaphore,
}

/// How a request may be repeated after a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Only when the connection could not be made (nothing was sent).
    ConnectOnly,
    /// Also after timeouts: the request has no effect beyond its answer.
    Idempotent,
}

/// The replies a POST takes: the statuses that mean success, and how long a body may be.
struct Accept<'a> {
    statuses: &'a [StatusCode],
    max_bytes: usize,
}

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl GbsServer {
    /// A client for the server at `nurl`; `name` (a nickname, say) is used in messages, else the address.
    /// Connects lazily, on the first request. Needs a tokio runtime when requests are made.
    pub fn new(
        nurl: &Nurl,
        name: Option<&str>,
        options: GbsOptions,
    ) -> Result<GbsServer, StorageError> {
        let name = name.map(str::to_owned).unwrap_or_else(|| nurl.endpoint());
        if nurl.tor {
            return Err(StorageError::Connect {
                server: name,
                reason:
                    "this NURL is reachable over Tor only, which tahoe-mount does not support yet"
                        .into(),
            });
        }
        if nurl.hints.is_empty() {
            return Err(StorageError::Connect {
                server: name,
                reason: "the NURL has no address".into(),
            });
        }
        let bases = nurl
            .hints
            .iter()
            .map(|h| {
                if h.host.contains(':') {
                    format!("https://[{}]:{}", h.host, h.port)
                } else {
                    format!("https://{}:{}", h.host, h.port)
                }
            })
            .collect();
        let (config, peer) =
            tls::client_config(nurl.spki_hash).map_err(|reason| StorageError::Tls {
                server: name.clone(),
                reason,
            })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(options.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(10)
            .build(https);
        let token = data_encoding::BASE64.encode(nurl.swissnum.as_bytes());
        let authorization =
            HeaderValue::from_str(&format!("Tahoe-LAFS {token}")).map_err(|_| {
                StorageError::Protocol {
                    server: name.clone(),
                    problem: "the NURL's swissnum cannot be sent in a header".into(),
                }
            })?;
        Ok(GbsServer {
            name,
            bases,
            current: AtomicUsize::new(0),
            authorization,
            client,
            peer,
            options,
            last_version: std::sync::Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
        })
    }

    /// The server's Foolscap tub id (SHA-1 of its certificate), which Tahoe derives lease secrets and write
    /// enablers from. Known after the first successful connection; makes one (a version request) if needed.
    pub async fn tubid(&self) -> Result<[u8; 20], StorageError> {
        if let Some(id) = self.peer_tubid() {
            return Ok(id);
        }
        self.version().await?;
        self.peer_tubid().ok_or_else(|| StorageError::Tls {
            server: self.name.clone(),
            reason: "connected, but the server's certificate was not recorded".into(),
        })
    }

    fn peer_tubid(&self) -> Option<[u8; 20]> {
        self.peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(PeerCertificate::tubid)
    }

    /// Sends one request (built afresh per attempt) and reads the whole reply, bounded by `max_body` bytes
    /// for a success and [`MAX_ERROR_BODY`] for an error.
    async fn exchange(
        &self,
        what: &str,
        retry: Retry,
        max_body: usize,
        build: impl Fn(&str) -> Result<Request<Pieces>, StorageError>,
    ) -> Result<Reply, StorageError> {
        self.exchange_into(what, retry, max_body, None, build).await
    }

    /// [`Self::exchange`], appending a success body to `into` (instead of `Reply::body`) as it arrives: a large
    /// read then lands in the caller's buffer with one copy, not gathered and copied again. A retried attempt
    /// starts again from the length `into` had.
    async fn exchange_into(
        &self,
        what: &str,
        retry: Retry,
        max_body: usize,
        mut into: Option<&mut BytesMut>,
        build: impl Fn(&str) -> Result<Request<Pieces>, StorageError>,
    ) -> Result<Reply, StorageError> {
        let start = into.as_ref().map_or(0, |b| b.len());
        let hints = self.bases.len();
        let max_attempts = match retry {
            Retry::ConnectOnly => hints,
            Retry::Idempotent => hints + self.options.read_retries as usize,
        };
        let mut attempt = 0;
        loop {
            let index = self.current.load(Ordering::Relaxed) % hints;
            if let Some(buffer) = into.as_deref_mut() {
                buffer.truncate(start);
            }
            let result = self
                .exchange_once(
                    what,
                    max_body,
                    into.as_deref_mut(),
                    build(&self.bases[index])?,
                )
                .await;
            attempt += 1;
            let error = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let retriable = matches!(
                (&error, retry),
                (StorageError::Connect { .. }, _)
                    | (StorageError::Timeout { .. }, Retry::Idempotent)
            );
            if !retriable || attempt >= max_attempts {
                return Err(error);
            }
            if matches!(error, StorageError::Connect { .. }) {
                // Try the next address; the one that answers becomes the first choice.
                let _ = self.current.compare_exchange(
                    index,
                    (index + 1) % hints,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
        }
    }

    async fn exchange_once(
        &self,
        what: &str,
        max_body: usize,
        into: Option<&mut BytesMut>,
        request: Request<Pieces>,
    ) -> Result<Reply, StorageError> {
        let timeout = self.options.request_timeout;
        // The semaphore is never closed, so acquiring fails only in theory; then the request goes unthrottled.
        let _permit = self.in_flight.acquire().await.ok();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.request_error(&e))?;
            let (parts, mut body) = response.into_parts();
            if let Some(into) = into.filter(|_| parts.status.is_success()) {
                let start = into.len();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| {
                        self.protocol(format!(
                            "{what}: the reply body broke off: {}",
                            error_chain(&e)
                        ))
                    })?;
                    if let Ok(data) = frame.into_data() {
                        if into.len() - start + data.len() > max_body {
                            return Err(self.protocol(format!(
                                "{what}: the server sent more than the {max_body} bytes expected (reply longer than allowed)"
                            )));
                        }
                        into.extend_from_slice(&data);
                    }
                }
                return Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body: Bytes::new(),
                });
            }
            let limit = if parts.status.is_success() {
                max_body
            } else {
                MAX_ERROR_BODY
            };
            let body = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    return Err(self.protocol(format!(
                        "{what}: the server sent more than the {limit} bytes expected (reply longer than allowed)"
                    )));
                }
                Err(e) => {
                    return Err(self.protocol(format!(
                        "{what}: the reply body broke off: {}",
                        error_chain(&*e)
                    )));
                }
            };
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Timeout {
                server: self.name.clone(),
                what: "request",
                seconds: timeout.as_secs_f64(),
            }),
        }
    }

    fn request_error(&self, error: &hyper_util::client::legacy::Error) -> StorageError {
        let chain = error_chain(error);
        if let Some(tls) = find_tls_error(error) {
            return StorageError::Tls {
                server: self.name.clone(),
                reason: tls.to_string(),
            };
        }
        if error.is_connect() {
            // hyper's own wording ("client error (Connect)") adds nothing to the cause below it.
            let reason = std::error::Error::source(error)
                .map(error_chain)
                .unwrap_or(chain);
            StorageError::Connect {
                server: self.name.clone(),
                reason,
            }
        } else {
            StorageError::Protocol {
                server: self.name.clone(),
                problem: chain,
            }
        }
    }

    fn protocol(&self, problem: String) -> StorageError {
        StorageError::Protocol {
            server: self.name.clone(),
            problem,
        }
    }

    /// The error for a reply whose status is not one the endpoint succeeds with.
    fn status_error(&self, what: &str, reply: &Reply) -> StorageError {
        let body = String::from_utf8_lossy(&reply.body);
        let mut text: String = body.chars().filter(|c| !c.is_control()).take(500).collect();
        if text.trim().is_empty() {
            text = reply
                .status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_string();
        }
        let server = self.name.clone();
        let what = format!("{what}: {}", text.trim());
        match reply.status {
            StatusCode::UNAUTHORIZED => StorageError::Unauthorized {
                server,
                reason: what,
            },
            StatusCode::NOT_FOUND => StorageError::NotFound { server, what },
            StatusCode::CONFLICT => StorageError::Conflict { server, what },
            status => StorageError::Http {
                server,
                status: status.as_u16(),
                body: what,
            },
        }
    }

    fn request(
        &self,
        method: Method,
        url: String,
        secrets: &[(&str, &[u8])],
        body: Option<(Pieces, &str)>,
    ) -> Result<Request<Pieces>, StorageError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, CBOR);
        for (name, secret) in secrets {
            builder = builder.header(
                "X-Tahoe-Authorization",
                format!("{name} {}", data_encoding::BASE64.encode(secret)),
            );
        }
        let body = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(CONTENT_TYPE, content_type);
                bytes
            }
            None => Pieces::default(),
        };
        // Every part above should be valid by construction (fixed names, base64 values, a URL built from checked
        // parts); if one is not, the request is not sent at all, rather than some other request.
        builder
            .body(body)
            .map_err(|e| self.protocol(format!("cannot build the request: {e}")))
    }

    /// A header value built from numbers, which cannot fail; if it did, no request goes out without it.
    fn header_value(&self, text: &str) -> Result<HeaderValue, StorageError> {
        HeaderValue::from_str(text)
            .map_err(|e| self.protocol(format!("cannot build the header value {text:?}: {e}")))
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, reply: &Reply) -> Result<T, StorageError> {
        replies::decode(&reply.body).map_err(|problem| self.protocol(format!("{what}: {problem}")))
    }

    fn expect(&self, what: &str, reply: &Reply, ok: &[StatusCode]) -> Result<(), StorageError> {
        if ok.contains(&reply.status) {
            Ok(())
        } else if reply.status.is_success() {
            Err(self.protocol(format!("{what}: unexpected status {}", reply.status)))
        } else {
            Err(self.status_error(what, reply))
        }
    }

    /// POSTs a CBOR `body` with `secrets` to `path` and checks the status is one of `ok`.
    async fn post_cbor(
        &self,
        what: &str,
        path: &str,
        secrets: &[(&str, &[u8])],
        body: Bytes,
        retry: Retry,
        accept: Accept<'_>,
    ) -> Result<Reply, StorageError> {
        let Accept {
            statuses: ok,
            max_bytes,
        } = accept;
        let max_reply = max_bytes.min(self.options.max_cbor_reply);
        let reply = self
            .exchange(what, retry, max_reply, |base| {
                self.request(
                    Method::POST,
                    format!("{base}{path}"),
                    secrets,
                    Some((Pieces::from(body.clone()), CBOR)),
                )
            })
            .await?;
        self.expect(what, &reply, ok)?;
        Ok(reply)
    }

    async fn get_cbor<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        max_reply: usize,
    ) -> Result<T, StorageError> {
        let reply = self
            .exchange(
                what,
                Retry::Idempotent,
                max_reply.min(self.options.max_cbor_reply),
                |base| self.request(Method::GET, format!("{base}{path}"), &[], None),
            )
            .await?;
        self.expect(what, &reply, &[StatusCode::OK])?;
        self.decode(what, &reply)
    }

    async fn read_share(
        &self,
        kind: &str,
        si: StorageIndex,
        share: ShareNumber,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        // Tahoe's server computes a mutable share's Content-Range before it reads the share: one rewritten in
        // between (a directory published while it is listed) comes back shorter than announced. Read it again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .read_share_into(kind, si, share, offset, length, None)
                .await
            {
                Err(StorageError::ShortBody { .. }) if kind == "mutable" && attempts < 3 => {
                    // The rewrite is a few milliseconds: let it end.
                    tokio::time::sleep(Duration::from_millis(50 * attempts)).await;
                }
                other => return other,
            }
        }
    }

    /// Reads a share range; with `into`, appends the bytes there and returns nothing.
    async fn read_share_into(
        &self,
        kind: &str,
        si: StorageIndex,
        share: ShareNumber,
        offset: u64,
        length: u64,
        mut into: Option<&mut BytesMut>,
    ) -> Result<Bytes, StorageError> {
        let what = format!("read {kind} share {si}/{share} at {offset}+{length}");
        let last = inclusive_end(offset, length)
            .ok_or_else(|| self.protocol(format!("{what}: range overflows")))?;
        let max_body = usize::try_from(length).unwrap_or(usize::MAX);
        let path = format!("/storage/v1/{kind}/{si}/{share}");
        let start = into.as_ref().map_or(0, |b| b.len());
        if let Some(buffer) = into.as_deref_mut() {
            // Room for what a reply of this length needs, within reason: what a server actually sends is
            // what grows the buffer beyond that.
            buffer.reserve(max_body.min(16 << 20));
        }
        // The size limit also stops a server that ignores Range and sends the whole share.
        let reply = self
            .exchange_into(
                &what,
                Retry::Idempotent,
                max_body,
                into.as_deref_mut(),
                |base| {
                    let mut request =
                        self.request(Method::GET, format!("{base}{path}"), &[], None)?;
                    let range = self.header_value(&format!("bytes={offset}-{last}"))?;
                    request.headers_mut().insert(RANGE, range);
                    Ok(request)
                },
            )
            .await?;
        let received = match &into {
            Some(buffer) if reply.status.is_success() => buffer.len() - start,
            _ => reply.body.len(),
        };
        match reply.status {
            StatusCode::NO_CONTENT => {
                if let Some(buffer) = into {
                    buffer.truncate(start);
                }
                Ok(Bytes::new())
            }
            StatusCode::PARTIAL_CONTENT => {
                let (start, end) = reply
                    .headers
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        self.protocol(format!("{what}: 206 reply without a valid Content-Range"))
                    })?;
                if start != offset || end < start || i128::from(end) > last {
                    return Err(self.protocol(format!(
                        "{what}: the server answered bytes {start}-{end}, not a prefix of {offset}-{last}"
                    )));
                }
                if received as u64 != end - start + 1 {
                    return Err(StorageError::ShortBody {
                        server: self.name.clone(),
                        what: what.to_string(),
                        announced: end - start + 1,
                        received: received as u64,
                    });
                }
                Ok(reply.body)
            }
            StatusCode::OK => {
                // The whole share, from a server that ignored the Range header.
                let skip = usize::try_from(offset).unwrap_or(usize::MAX).min(received);
                let end = skip.saturating_add(max_body).min(received);
                match into {
                    Some(buffer) => {
                        buffer.copy_within(start + skip..start + end, start);
                        buffer.truncate(start + end - skip);
                        Ok(Bytes::new())
                    }
                    None => Ok(reply.body.slice(skip..end)),
                }
            }
            _ => Err(self.status_error(&what, &reply)),
        }
    }

    async fn advise_corrupt(
        &self,
        kind: &str,
        si: StorageIndex,
        share: ShareNumber,
        reason: &str,
    ) -> Result<(), StorageError> {
        let what = format!("corruption advisory for {kind} share {si}/{share}");
        let mut reason: String = reason.chars().filter(|c| *c != '\0').collect();
        if reason.trim().is_empty() {
            reason = "unspecified".into();
        }
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let body = to_cbor(&CorruptRequest { reason: &reason });
        let path = format!("/storage/v1/{kind}/{si}/{share}/corrupt");
        self.post_cbor(
            &what,
            &path,
            &[],
            body,
            Retry::Idempotent,
            Accept {
                statuses: &[StatusCode::OK, StatusCode::NO_CONTENT],
                max_bytes: MAX_ERROR_BODY,
            },
        )
        .await
        .map(drop)
    }

    async fn list_shares(
        &self,
        kind: &str,
        si: StorageIndex,
    ) -> Result<BTreeSet<ShareNumber>, StorageError> {
        let what = format!("list {kind} shares of {si}");
        let set: ShareSet = self
            .get_cbor(
                &what,
                &format!("/storage/v1/{kind}/{si}/shares"),
                MAX_SMALL_REPLY,
            )
            .await?;
        Ok(set.0.0)
    }

    async fn version(&self) -> Result<ServerVersion, StorageError> {
        let what = "version";
        let value: ciborium::Value = self
            .get_cbor(what, "/storage/v1/version", MAX_VERSION_REPLY)
            .await?;
        let version =
            parse_version(&value).map_err(|problem| self.protocol(format!("{what}: {problem}")))?;
        *self
            .last_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), version.clone()));
        Ok(version)
    }

    async fn version_recent(&self, max_age: Duration) -> Result<ServerVersion, StorageError> {
        let cached = self
            .last_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match cached {
            Some((at, version)) if at.elapsed() <= max_age => Ok(version),
            _ => self.version().await,
        }
    }

    /// One PATCH of `data`, the pieces back to back (sent as they are, not joined first).
    async fn write_chunk(
        &self,
        si: StorageIndex,
        share: ShareNumber,
        secret: &[u8],
        offset: u64,
        data: &[Bytes],
    ) -> Result<UploadProgress, StorageError> {
        let length: u64 = data.iter().map(|d| d.len() as u64).sum();
        let what = format!("write immutable share {si}/{share} at {offset}+{length}");
        let last = inclusive_end(offset, length)
            .ok_or_else(|| self.protocol(format!("{what}: range overflows")))?;
        let path = format!("/storage/v1/immutable/{si}/{share}");
        // Rewriting the same bytes is harmless (the server accepts identical overlapping writes), so a write
        // that timed out may be repeated.
        let reply = self
            .exchange(
                &what,
                Retry::Idempotent,
                self.options.max_cbor_reply,
                |base| {
                    let mut request = self.request(
                        Method::PATCH,
                        format!("{base}{path}"),
                        &[("upload-secret", secret)],
                        Some((Pieces::new(data), "application/octet-stream")),
                    )?;
                    let range = self.header_value(&format!("bytes {offset}-{last}/*"))?;
                    request.headers_mut().insert(CONTENT_RANGE, range);
                    Ok(request)
                },
            )
            .await?;
        self.expect(&what, &reply, &[StatusCode::OK, StatusCode::CREATED])?;
        let progress: PatchResponse = self.decode(&what, &reply)?;
        let mut required = Vec::with_capacity(progress.required.len());
        for r in progress.required {
            if r.begin > r.end {
                return Err(self.protocol(format!(
                    "{what}: required range {}..{} is backwards",
                    r.begin, r.end
                )));
            }
            required.push(r.begin..r.end);
        }
        Ok(UploadProgress {
            complete: reply.status == StatusCode::CREATED,
            required,
        })
    }
}

/// A request body of pieces sent one after another: an upload's blocks go out as they are, without being joined
/// into one buffer first.
#[derive(Default)]
pub struct Pieces {
    pieces: VecDeque<Bytes>,
    left: u64,
}

impl Pieces {
    fn new(pieces: &[Bytes]) -> Pieces {
        Pieces {
            pieces: pieces.iter().filter(|p| !p.is_empty()).cloned().collect(),
            left: pieces.iter().map(|p| p.len() as u64).sum(),
        }
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Pieces {
        Pieces::new(&[bytes])
    }
}

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = self.pieces.pop_front();
        if let Some(piece) = &next {
            self.left -= piece.len() as u64;
        }
        std::task::Poll::Ready(next.map(|piece| Ok(hyper::body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// The rustls error behind a failed request, if any. hyper-rustls nests it in io::Errors, whose `source()`
/// skips the wrapped error, so those are unwrapped with `get_ref`.
fn find_tls_error<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

fn to_cbor<T: Serialize>(value: &T) -> Bytes {
    let mut out = Vec::new();
    // Serializing plain structs into a Vec cannot fail.
    let _ = ciborium::into_writer(value, &mut out);
    Bytes::from(out)
}

/// The inclusive last byte of `length` bytes at `offset`, as HTTP ranges write it. A zero-length range comes
/// out as `offset - 1` (possibly -1): it cannot be expressed, and is sent anyway so that the server gives its
/// own answer (416 from 1.20), as for any other request it cannot serve. `None` on overflow.
fn inclusive_end(offset: u64, length: u64) -> Option<i128> {
    offset.checked_add(length).map(|end| i128::from(end) - 1)
}

/// `bytes A-B/*` (or `/N`) → (A, B).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

#[derive(Serialize)]
struct AllocateRequest {
    #[serde(rename = "share-numbers")]
    share_numbers: ciborium::tag::Required<BTreeSet<ShareNumber>, 258>,
    #[serde(rename = "allocated-size")]
    allocated_size: u64,
}

#[derive(Serialize)]
struct CorruptRequest<'a> {
    reason: &'a str,
}

#[derive(Serialize)]
struct ReadTestWriteRequest<'a> {
    #[serde(rename = "test-write-vectors")]
    test_write_vectors: BTreeMap<ShareNumber, WireTestWrite<'a>>,
    #[serde(rename = "read-vector")]
    read_vector: Vec<WireRange>,
}

#[derive(Serialize)]
struct WireTestWrite<'a> {
    test: Vec<WireTest<'a>>,
    write: Vec<WireWrite<'a>>,
    #[serde(rename = "new-length")]
    new_length: Option<u64>,
}

#[derive(Serialize)]
struct WireTest<'a> {
    offset: u64,
    size: u64,
    #[serde(with = "serde_bytes")]
    specimen: &'a [u8],
}

#[derive(Serialize)]
struct WireWrite<'a> {
    offset: u64,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

#[derive(Serialize)]
struct WireRange {
    offset: u64,
    size: u64,
}

impl StorageServer for GbsServer {
    fn name(&self) -> &str {
        &self.name
    }

    fn lease_seed(&self) -> StorageFuture<'_, [u8; 20]> {
        Box::pin(self.tubid())
    }

    fn version(&self) -> StorageFuture<'_, ServerVersion> {
        Box::pin(GbsServer::version(self))
    }

    fn version_recent(&self, max_age: Duration) -> StorageFuture<'_, ServerVersion> {
        Box::pin(GbsServer::version_recent(self, max_age))
    }

    fn allocate_buckets<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_numbers: &'a BTreeSet<ShareNumber>,
        allocated_size: u64,
        lease: LeaseSecrets,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, Allocation> {
        Box::pin(async move {
            let what = format!(
                "allocate {} shares of {allocated_size} bytes for {storage_index}",
                share_numbers.len()
            );
            let body = to_cbor(&AllocateRequest {
                share_numbers: ciborium::tag::Required(share_numbers.clone()),
                allocated_size,
            });
            let path = format!("/storage/v1/immutable/{storage_index}");
            let secrets: [(&str, &[u8]); 3] = [
                ("lease-renew-secret", &lease.renew),
                ("lease-cancel-secret", &lease.cancel),
                ("upload-secret", upload_secret),
            ];
            // Not repeated after a timeout: a second allocation while the first is in progress returns nothing.
            let ok = [StatusCode::OK, StatusCode::CREATED];
            let reply = self
                .post_cbor(
                    &what,
                    &path,
                    &secrets,
                    body,
                    Retry::ConnectOnly,
                    Accept {
                        statuses: &ok,
                        max_bytes: MAX_SMALL_REPLY,
                    },
                )
                .await?;
            let answer: AllocateResponse = self.decode(&what, &reply)?;
            let (already_have, allocated) = (answer.already_have.0.0, answer.allocated.0.0);
            // A server may grant less than was asked, never more: a share it "allocated" unasked would be
            // counted as placed and never written.
            if let Some(unasked) = allocated.difference(share_numbers).next() {
                return Err(self.protocol(format!(
                    "{what}: the server allocated share {unasked}, which was not asked for"
                )));
            }
            if let Some(impossible) = already_have.iter().find(|&&share| share > 255) {
                return Err(self.protocol(format!(
                    "{what}: the server says it has share {impossible}, beyond any encoding's 256"
                )));
            }
            Ok(Allocation {
                already_have,
                allocated,
            })
        })
    }

    fn write_share_chunk<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
        offset: u64,
        data: Bytes,
    ) -> StorageFuture<'a, UploadProgress> {
        self.write_share_pieces(
            storage_index,
            share_number,
            upload_secret,
            offset,
            vec![data],
        )
    }

    fn write_share_pieces<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
        offset: u64,
        data: Vec<Bytes>,
    ) -> StorageFuture<'a, UploadProgress> {
        Box::pin(async move {
            let total: usize = data.iter().map(Bytes::len).sum();
            if total == 0 {
                // Sent as is, so the answer is the server's (see `inclusive_end`).
                return self
                    .write_chunk(
                        storage_index,
                        share_number,
                        upload_secret,
                        offset,
                        &[Bytes::new()],
                    )
                    .await;
            }
            // PATCHes of at most `upload_chunk` bytes, each made of the pieces (or parts of them) it covers.
            let chunk = self.options.upload_chunk.max(1);
            let mut progress = None;
            let mut sent = 0usize;
            let mut pieces = data.into_iter().filter(|d| !d.is_empty());
            let mut carry: Option<Bytes> = None;
            while sent < total {
                let mut request = Vec::new();
                let mut size = 0;
                while size < chunk {
                    let Some(mut piece) = carry.take().or_else(|| pieces.next()) else {
                        break;
                    };
                    if piece.len() > chunk - size {
                        carry = Some(piece.split_off(chunk - size));
                    }
                    size += piece.len();
                    request.push(piece);
                }
                progress = Some(
                    self.write_chunk(
                        storage_index,
                        share_number,
                        upload_secret,
                        offset + sent as u64,
                        &request,
                    )
                    .await?,
                );
                sent += size;
            }
            progress.ok_or_else(|| self.protocol("no write was made".into()))
        })
    }

    fn abort_upload<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        upload_secret: &'a [u8],
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let what = format!("abort upload of immutable share {storage_index}/{share_number}");
            let path = format!("/storage/v1/immutable/{storage_index}/{share_number}/abort");
            let reply = self
                .exchange(&what, Retry::ConnectOnly, MAX_ERROR_BODY, |base| {
                    self.request(
                        Method::PUT,
                        format!("{base}{path}"),
                        &[("upload-secret", upload_secret)],
                        None,
                    )
                })
                .await?;
            self.expect(&what, &reply, &[StatusCode::OK, StatusCode::NO_CONTENT])
        })
    }

    fn list_immutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        Box::pin(self.list_shares("immutable", storage_index))
    }

    fn read_immutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(self.read_share("immutable", storage_index, share_number, offset, length))
    }

    fn read_immutable_share_into<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
        into: &'a mut BytesMut,
    ) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            self.read_share_into(
                "immutable",
                storage_index,
                share_number,
                offset,
                length,
                Some(into),
            )
            .await
            .map(drop)
        })
    }

    fn advise_corrupt_immutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        Box::pin(self.advise_corrupt("immutable", storage_index, share_number, reason))
    }

    fn add_or_renew_lease(
        &self,
        storage_index: StorageIndex,
        lease: LeaseSecrets,
    ) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            let what = format!("renew lease on {storage_index}");
            let path = format!("/storage/v1/lease/{storage_index}");
            let secrets: [(&str, &[u8]); 2] = [
                ("lease-renew-secret", &lease.renew),
                ("lease-cancel-secret", &lease.cancel),
            ];
            let reply = self
                .exchange(&what, Retry::Idempotent, MAX_ERROR_BODY, |base| {
                    self.request(Method::PUT, format!("{base}{path}"), &secrets, None)
                })
                .await?;
            self.expect(&what, &reply, &[StatusCode::NO_CONTENT, StatusCode::OK])
        })
    }

    fn read_test_write<'a>(
        &'a self,
        storage_index: StorageIndex,
        secrets: MutableSecrets,
        test_write_vectors: &'a BTreeMap<ShareNumber, TestWriteVectors>,
        read_vector: &'a [ReadVector],
    ) -> StorageFuture<'a, ReadTestWriteResult> {
        Box::pin(async move {
            let what = format!("read-test-write of mutable slot {storage_index}");
            let request = ReadTestWriteRequest {
                test_write_vectors: test_write_vectors
                    .iter()
                    .map(|(&share, v)| {
                        let wire = WireTestWrite {
                            test: v
                                .tests
                                .iter()
                                .map(|t| WireTest {
                                    offset: t.offset,
                                    size: t.size,
                                    specimen: &t.specimen,
                                })
                                .collect(),
                            write: v
                                .writes
                                .iter()
                                .map(|w| WireWrite {
                                    offset: w.offset,
                                    data: &w.data,
                                })
                                .collect(),
                            new_length: v.new_length,
                        };
                        (share, wire)
                    })
                    .collect(),
                read_vector: read_vector
                    .iter()
                    .map(|r| WireRange {
                        offset: r.offset,
                        size: r.size,
                    })
                    .collect(),
            };
            let body = to_cbor(&request);
            let read_bytes: u64 = read_vector.iter().map(|r| r.size).sum();
            let max_reply = usize::try_from(read_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(64)
                .saturating_mul(MAX_SHARES_PER_SLOT)
                .saturating_add(MAX_SMALL_REPLY);
            let path = format!("/storage/v1/mutable/{storage_index}/read-test-write");
            let wire_secrets: [(&str, &[u8]); 3] = [
                ("write-enabler", &secrets.write_enabler),
                ("lease-renew-secret", &secrets.lease.renew),
                ("lease-cancel-secret", &secrets.lease.cancel),
            ];
            // Not repeated after a timeout: the tests would then see this request's own writes.
            let ok = [StatusCode::OK];
            let reply = self
                .post_cbor(
                    &what,
                    &path,
                    &wire_secrets,
                    body,
                    Retry::ConnectOnly,
                    Accept {
                        statuses: &ok,
                        max_bytes: max_reply,
                    },
                )
                .await?;
            let answer: ReadTestWriteResponse = self.decode(&what, &reply)?;
            Ok(ReadTestWriteResult {
                success: answer.success,
                data: answer
                    .data
                    .into_iter()
                    .map(|(share, reads)| {
                        (
                            share,
                            reads
                                .into_iter()
                                .map(|b| Bytes::from(b.into_vec()))
                                .collect(),
                        )
                    })
                    .collect(),
            })
        })
    }

    fn read_mutable_share(
        &self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        offset: u64,
        length: u64,
    ) -> StorageFuture<'_, Bytes> {
        Box::pin(self.read_share("mutable", storage_index, share_number, offset, length))
    }

    fn list_mutable_shares(
        &self,
        storage_index: StorageIndex,
    ) -> StorageFuture<'_, BTreeSet<ShareNumber>> {
        Box::pin(self.list_shares("mutable", storage_index))
    }

    fn advise_corrupt_mutable<'a>(
        &'a self,
        storage_index: StorageIndex,
        share_number: ShareNumber,
        reason: &'a str,
    ) -> StorageFuture<'a, ()> {
        Box::pin(self.advise_corrupt("mutable", storage_index, share_number, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_request_uses_tag_258() {
        let body = to_cbor(&AllocateRequest {
            share_numbers: ciborium::tag::Required([0u16, 1].into_iter().collect()),
            allocated_size: 100,
        });
        // GBS.md: a2 6d "share-numbers" d9 0102 82 00 01 6e "allocated-size" 18 64
        let mut expected = vec![0xa2, 0x6d];
        expected.extend_from_slice(b"share-numbers");
        expected.extend_from_slice(&[0xd9, 0x01, 0x02, 0x82, 0x00, 0x01, 0x6e]);
        expected.extend_from_slice(b"allocated-size");
        expected.extend_from_slice(&[0x18, 0x64]);
        assert_eq!(body.as_ref(), expected.as_slice());
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-15/*"), Some((0, 15)));
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5, 9)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/*"), None);
        assert_eq!(parse_content_range("bytes 99999999999999999999-1/*"), None);
    }
}
