//! Counts every gRPC request by method and status code, with its duration, into
//! `drover_grpc_requests_total` and `drover_grpc_request_duration_seconds` (a tower layer
//! around the whole gRPC server).
//!
//! The code is the response's `grpc-status` header: tonic sends a refusal as headers alone,
//! so every error answered before a body is counted under its code; an answer with a body
//! counts as `OK` (a stream that fails later is not recounted). Methods outside drover's
//! services are counted as `unknown`, so a client cannot grow the label set.

use crate::metrics::GrpcMetrics;
use axum::http::{Request, Response};
use futures::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Instant;

/// The services whose methods are counted by name.
const SERVICES: &[&str] = &[
    "/orchion.v1.Orchestrator/",
    "/drover.v1.Nodes/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
];

#[derive(Clone)]
pub struct Counted<S> {
    pub inner: S,
    pub metrics: GrpcMetrics,
}

/// The canonical name of a `grpc-status` value.
fn code_name(value: Option<&str>) -> &'static str {
    let code = value.and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Counted<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let method = if SERVICES.iter().any(|s| path.starts_with(s)) {
            path.to_string()
        } else {
            "unknown".to_string()
        };
        let started = Instant::now();
        let answer = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(r) => code_name(r.headers().get("grpc-status").and_then(|v| v.to_str().ok())),
                Err(_) => "UNKNOWN",
            };
            metrics.record(&method, code, started.elapsed());
            answer
        })
    }
}
