//! The Worker's [`Platform`]: outbound calls with `fetch` (bounded in time by an
//! `AbortController` and in size as the body streams in), no background tasks (an isolate
//! may be frozen between requests, as a Lambda instance is), files from text bindings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use capsign_core::client::Platform;

/// The Worker's platform.
#[derive(Debug, Default)]
pub struct WorkerPlatform {
    /// The files the settings name, by path (see [`crate::config`]).
    pub files: HashMap<PathBuf, Vec<u8>>,
}

impl WorkerPlatform {
    fn file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "a Worker has no files: bind the contents of {} as text under the \
                     setting's name with {}",
                    path.display(),
                    crate::config::TEXT_SUFFIX
                ),
            )
        })
    }
}

#[cfg(target_arch = "wasm32")]
mod fetch {
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use capsign_core::client::{BoxFuture, ClientError, Fetched};
    use futures_util::future::{Either, select};
    use http::Request;
    use http_body_util::BodyExt as _;

    /// Sends `req` with `fetch`; the whole answer within `timeout`, its body at most
    /// `max_body` bytes.
    pub(super) fn send(
        req: Request<Bytes>,
        timeout: Duration,
        max_body: usize,
    ) -> BoxFuture<'static, Result<Fetched, ClientError>> {
        Box::pin(async move {
            let controller = worker::AbortController::default();
            let call = Box::pin(call(req, controller.signal(), max_body));
            let deadline = Box::pin(worker::Delay::from(timeout));
            match select(call, deadline).await {
                Either::Left((answer, _)) => answer,
                Either::Right(((), _)) => {
                    controller.abort();
                    Err(ClientError::Timeout(timeout))
                }
            }
        })
    }

    /// The body goes as bytes, not a stream, so `fetch` sends its `Content-Length` (a stream
    /// would go chunked, which not every webhook reads).
    async fn call(
        req: Request<Bytes>,
        signal: worker::AbortSignal,
        max_body: usize,
    ) -> Result<Fetched, ClientError> {
        let net = |e: worker::Error| ClientError::Network(e.to_string());
        let (parts, body) = req.into_parts();
        let mut init = worker::RequestInit::new();
        init.with_method(worker::Method::from(parts.method.as_str().to_owned()))
            .with_headers(worker::Headers::from(&parts.headers));
        if !body.is_empty() {
            init.with_body(Some(js_sys::Uint8Array::from(body.as_ref()).into()));
        }
        let req = worker::Request::new_with_init(&parts.uri.to_string(), &init).map_err(net)?;
        let resp = worker::Fetch::Request(req)
            .send_with_signal(&signal)
            .await
            .map_err(net)?;
        let resp = worker::response_from_wasm(resp.into()).map_err(net)?;
        let (parts, mut body) = resp.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(ClientError::TooLarge(max_body));
        }
        let mut read = BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(net)?.into_data() {
                if read.len() + data.len() > max_body {
                    return Err(ClientError::TooLarge(max_body));
                }
                read.extend_from_slice(&data);
            }
        }
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body: read.freeze(),
        })
    }
}

impl Platform for WorkerPlatform {
    fn send(
        &self,
        req: http::Request<bytes::Bytes>,
        timeout: std::time::Duration,
        max_body: usize,
    ) -> capsign_core::client::BoxFuture<
        'static,
        Result<capsign_core::client::Fetched, capsign_core::client::ClientError>,
    > {
        #[cfg(target_arch = "wasm32")]
        return fetch::send(req, timeout, max_body);
        // Natively only this crate's unit tests build it, and they call out to nothing.
        #[cfg(not(target_arch = "wasm32"))]
        return capsign_core::client::Offline.send(req, timeout, max_body);
    }

    fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.file(path)
    }
}
