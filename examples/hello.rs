//! The benchmark's ceiling: a hyper hello-world built from capsign's own lockfile, with the
//! same runtime and connection settings as `capsign::server::run`, answering a 13-byte body.
//!
//! `cargo run --release --example hello -- 127.0.0.1:3001`; `bench/run` starts it for you.
//!
//! With a second argument, a JSON file `{"headers": [[name, value], ...], "body": "..."}`, it
//! answers every request with those headers and body instead: `bench/run` gives it capsign's
//! own answer to the measured request, so the "wire floor" costs what capsign's bytes cost on
//! the wire and in hyper, with none of capsign's work.
//!
//! The file may also name `"work": {"macs": [n, ...], "decode": [n, ...], "encode": [n, ...]}`:
//! per request, one HMAC-SHA256 (key prepared once) over each `n` bytes, one base64url decode
//! of each `n` characters and one encode of each `n` bytes; and `"spin_ns": n`, that many
//! nanoseconds of busy work after them (`bench/profile --spin-us`). `bench/run` fills it with the sizes
//! capsign's measured request MACs and (de)codes, so this "crypto floor" is the best any server
//! doing capsign's cryptography, and nothing else, could do.
//!
//! Or it may name `"lean": {...}` (see `floors/lean.rs`): the "lean floor", which answers the
//! request it gets by the least work that still does it for real (the cryptography on the
//! request's own bytes, its JSON read, the grants decoded, merged and written); `bench/profile
//! --server lean` starts it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::Sha256;
use tokio::net::TcpListener;

#[path = "floors/lean.rs"]
mod lean;

/// What every request gets.
struct Answer {
    headers: HeaderMap,
    body: Bytes,
    work: Option<Work>,
    lean: Option<lean::Lean>,
}

/// The cryptography of one request, as sizes (see the module docs).
#[derive(serde::Deserialize)]
struct WorkSizes {
    #[serde(default)]
    macs: Vec<usize>,
    #[serde(default)]
    decode: Vec<usize>,
    #[serde(default)]
    encode: Vec<usize>,
    /// Nanoseconds of busy work per request after the cryptography: a stand-in for a server's
    /// own work, so `bench/profile --spin-us` can show what a given amount of it costs.
    #[serde(default)]
    spin_ns: u64,
}

/// The inputs for [`WorkSizes`], made once.
struct Work {
    key: Hmac<Sha256>,
    macs: Vec<Vec<u8>>,
    decode: Vec<String>,
    encode: Vec<Vec<u8>>,
    spin: std::time::Duration,
}

impl Work {
    fn new(sizes: WorkSizes) -> Result<Work, String> {
        let bytes = |n: usize| (0..n).map(|i| i as u8).collect::<Vec<u8>>();
        Ok(Work {
            key: Hmac::<Sha256>::new_from_slice(b"crypto floor").map_err(|e| e.to_string())?,
            macs: sizes.macs.into_iter().map(bytes).collect(),
            decode: (sizes.decode.into_iter())
                .map(|n| URL_SAFE_NO_PAD.encode(bytes(n * 3 / 4)))
                .collect(),
            encode: sizes.encode.into_iter().map(bytes).collect(),
            spin: std::time::Duration::from_nanos(sizes.spin_ns),
        })
    }

    /// Does the work; the results go where the optimizer cannot drop them.
    fn run(&self) {
        for input in &self.macs {
            let mut mac = self.key.clone();
            mac.update(input);
            std::hint::black_box(mac.finalize().into_bytes());
        }
        for text in &self.decode {
            std::hint::black_box(URL_SAFE_NO_PAD.decode(std::hint::black_box(text)).ok());
        }
        for input in &self.encode {
            std::hint::black_box(URL_SAFE_NO_PAD.encode(std::hint::black_box(input)));
        }
        if !self.spin.is_zero() {
            let started = std::time::Instant::now();
            while started.elapsed() < self.spin {
                std::hint::spin_loop();
            }
        }
    }
}

fn answer<B>(answer: &Answer, req: &Request<B>) -> Response<Full<Bytes>> {
    if let Some(lean) = &answer.lean {
        return lean.answer(req);
    }
    if let Some(work) = &answer.work {
        work.run();
    }
    let mut resp = Response::new(Full::new(answer.body.clone()));
    if !answer.headers.is_empty() {
        *resp.headers_mut() = answer.headers.clone();
    }
    resp
}

fn load(path: &str) -> Result<Answer, String> {
    #[derive(serde::Deserialize)]
    struct File {
        headers: Vec<(String, String)>,
        body: String,
        work: Option<WorkSizes>,
        lean: Option<lean::LeanConfig>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let file: File = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut headers = HeaderMap::new();
    for (k, v) in file.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k}: {e}"))?;
        let value = HeaderValue::from_str(&v).map_err(|e| format!("{k}: {e}"))?;
        headers.append(name, value);
    }
    let lean = file
        .lean
        .map(|c| lean::Lean::new(c, &headers))
        .transpose()?;
    Ok(Answer {
        headers,
        body: Bytes::from(file.body),
        work: file.work.map(Work::new).transpose()?,
        lean,
    })
}

fn main() -> std::io::Result<()> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:3001")
        .parse()
        .map_err(|e| invalid(format!("{e}")))?;
    let fixed = match args.next() {
        Some(path) => load(&path).map_err(invalid)?,
        None => Answer {
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"Hello, World!"),
            work: None,
            lean: None,
        },
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(addr, Arc::new(fixed)))
}

async fn serve(addr: SocketAddr, fixed: Arc<Answer>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("hello: listening on http://{}", listener.local_addr()?);
    // capsign's own defaults (the demo settings leave every limit at its default).
    let defaults = capsign::settings::Settings::load(&|_| None, None)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(defaults.server.header_timeout)
        .max_buf_size(capsign::server::MAX_HEADER_BYTES)
        .max_headers(capsign::server::MAX_HEADERS);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let fixed = Arc::clone(&fixed);
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let resp = answer(&fixed, &req);
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
