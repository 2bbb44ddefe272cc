//! Counts every gRPC request by method and status code, with its duration, into
//! `drover_grpc_requests_total` and `drover_grpc_request_duration_seconds` (a tower layer
//! around the whole gRPC server).
//!
//! The code is the response's `grpc-status` header: tonic sends a refusal as headers alone,
//! so every error answered before a body is counted under its code; an answer with a body
//! counts as `OK` (a stream that fails later is not recounted). Paths outside drover's methods
//! are counted as `unknown`, so a client cannot grow the label set; the labels are static
//! strings, so counting allocates nothing per call.

use crate::metrics::GrpcMetrics;
use axum::http::{Request, Response};
use futures::future::BoxFuture;
use std::task::{Context, Poll};
use std::time::Instant;

/// The methods counted by name; any other path counts as `unknown`.
const METHODS: &[&str] = &[
    "/orchion.v1.Orchestrator/RegisterNode",
    "/orchion.v1.Orchestrator/UpdateNode",
    "/orchion.v1.Orchestrator/Heartbeat",
    "/orchion.v1.Orchestrator/ListNodes",
    "/orchion.v1.Orchestrator/SubmitJob",
    "/orchion.v1.Orchestrator/GetJobStatus",
    "/drover.v1.Nodes/WatchNodes",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
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
        let method = METHODS
            .iter()
            .find(|m| **m == path)
            .copied()
            .unwrap_or("unknown");
        let started = Instant::now();
        let answer = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(r) => code_name(r.headers().get("grpc-status").and_then(|v| v.to_str().ok())),
                Err(_) => "UNKNOWN",
            };
            metrics.record(method, code, started.elapsed());
            answer
        })
    }
}
