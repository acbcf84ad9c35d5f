//! The HTTP side: bounded body reads, the handlers and the router.

use std::sync::Arc;
use std::time::Instant;

use crate::config::*;
use crate::counters::ErrorKind;
use crate::rank::*;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

/// A request body, read up to a limit.
enum BodyRead {
    Complete(Vec<u8>),
    /// Over the limit: read and thrown away up to the discard bound, or
    /// further than that (the rest is unread).
    TooLarge,
    /// The client went away or broke the framing.
    Failed(String),
}

/// Reads `body`, keeping at most `limit` bytes; past the limit it reads and
/// discards up to `discard` bytes in all, so that the client has sent its
/// body before it is answered (see [`DISCARD_FACTOR`]).
async fn read_body(mut body: Body, limit: usize, discard: usize) -> BodyRead {
    use axum::body::HttpBody;
    let mut kept = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(e)) => return BodyRead::Failed(e.to_string()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                seen = seen.saturating_add(data.len());
                if seen <= limit {
                    kept.extend_from_slice(&data);
                } else if seen > discard {
                    return BodyRead::TooLarge;
                } else if !kept.is_empty() {
                    kept = Vec::new();
                }
            }
        }
    }
    if seen > limit {
        BodyRead::TooLarge
    } else {
        BodyRead::Complete(kept)
    }
}

async fn rank(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let t = Instant::now();
    let limit = st.cfg.max_body_bytes;
    let discard = limit.saturating_mul(DISCARD_FACTOR);
    let too_large = |detail: String| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::BodyTooLarge,
            format!("request body {detail}over {limit} bytes (serve.max_body_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // Whether to close the connection after the answer (the body was not read
    // to its end, or the client is gone).
    let mut close = true;
    let reply = match declared {
        // Refused before reading: the client waits for "100 Continue" and has
        // not sent the body, or the body is longer than is worth discarding.
        Some(n) if n > limit as u64 && (expects_continue || n > discard as u64) => {
            too_large(format!("of {n} bytes "))
        }
        _ => match read_body(body, limit, discard).await {
            BodyRead::Complete(bytes) => {
                close = false;
                let st2 = st.clone();
                // Scoring is CPU work: keep it off the async workers.
                match tokio::task::spawn_blocking(move || st2.rank(&bytes)).await {
                    Ok(r) => r,
                    Err(e) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorKind::Internal,
                        format!("scoring task: {e}"),
                    ),
                }
            }
            BodyRead::TooLarge => too_large(String::new()),
            BodyRead::Failed(e) => error(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("reading the request body: {e}"),
            ),
        },
    };
    st.record(&reply, t.elapsed());
    let mut response = (reply.status, axum::Json(reply.body)).into_response();
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    let served = st.current();
    let body = serde_json::json!({
        "status": if served.is_some() { "ok" } else { "waiting_for_model" },
        "model_version": served.as_ref().map(|s| s.version),
        "pair_state": st.pair_state().is_some(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics_text(),
    )
        .into_response()
}

pub fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/rank", post(rank))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(st)
}
