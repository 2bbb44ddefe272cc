//! The start check both drivers share: whether a runner answers HTTP on its port.
//!
//! It owns one question, asked once: does a `GET /` sent to an address get back the first bytes
//! of an HTTP answer (any status) within a bound. It decides nothing about how often to ask or
//! what a failure means: each driver asks until its start timeout, watching its sandbox for an
//! exit between tries, and turns a runner that never answers into a failed start.
//!
//! Why an HTTP answer and not a TCP connect: a connect proves nothing about the runner. The
//! process driver's listening socket is bound and listening before the runner's program starts
//! (it is handed over as fd 3, so the kernel queues connections for a program that may never
//! accept them), and Docker's port proxy accepts connections on the host port whether or not the
//! container listens. Only an answer shows that the runner's program serves. Every runner of the
//! session-runners contract is an HTTP server (its endpoint is an `http://` URL), so asking for
//! `/` holds no runner to more than the contract does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The pause between two tries while a runner starts: short, since a provision waits on it.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The most one try may take; a runner that is up answers `/` well within it.
pub const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// Whether a `GET /` to `addr` is answered with HTTP within `limit`.
pub async fn answers_http(addr: SocketAddr, limit: Duration) -> bool {
    tokio::time::timeout(limit, ask(addr))
        .await
        .unwrap_or(false)
}

async fn ask(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET / HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // The status line's first five bytes are enough: `HTTP/`.
    let mut head = [0u8; 5];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    &head == b"HTTP/"
}

/// The address to ask a runner at when it listens on `ip`: the loopback address of the same
/// family when `ip` is the unspecified one (a runner bound to every address answers on
/// loopback; the unspecified address itself cannot be connected to everywhere).
pub fn probe_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn an_http_answer_counts_and_silence_or_other_bytes_do_not() {
        // A listener that never accepts: the kernel completes the connect, nobody answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        assert!(!answers_http(addr, Duration::from_millis(300)).await);

        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = http.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = http.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n")
                .await
                .unwrap();
        });
        assert!(
            answers_http(addr, Duration::from_secs(5)).await,
            "any status"
        );

        let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = other.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = other.accept().await.unwrap();
            s.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        });
        assert!(!answers_http(addr, Duration::from_secs(5)).await);

        // Nobody listening at all.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        assert!(!answers_http(addr, Duration::from_secs(5)).await);
    }

    #[test]
    fn a_runner_on_every_address_is_asked_on_loopback() {
        assert_eq!(
            probe_ip("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            probe_ip("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            probe_ip("10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }
}
