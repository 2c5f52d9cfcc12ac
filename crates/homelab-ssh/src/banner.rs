//! Reading the server's identification line before the SSH session starts.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why no SSH server was found at an address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BannerError {
    /// Nothing answered on the port (refused, unreachable, or timed out: `TimedOut`).
    #[error("no answer on the SSH port ({0})")]
    NoAnswer(#[source] std::io::Error),
    /// Something answered but sent no line (the read failed, or timed out: `TimedOut`).
    #[error("the SSH port answered without a banner ({0})")]
    NoBanner(#[source] std::io::Error),
    /// Something answered with a line that is not an SSH identification line.
    #[error("the SSH port answered without a banner (got {0:?})")]
    NotSsh(String),
}

/// A connection whose first bytes (the server's identification line, and whatever was read
/// with it) were consumed to look at them; they are handed to the SSH client again first, so
/// one TCP connection serves both the banner check and the session
/// ([`crate::Session::connect_stream`]).
#[derive(Debug)]
pub struct BannerStream {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for BannerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BannerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Connects to `addr` (within `connect_timeout`) and reads the SSH identification line the
/// server sends first (within `banner_timeout`). Returns the line and the connection, ready
/// for [`crate::Session::connect_stream`].
///
/// # Errors
/// Nothing answered, or what answered is not an SSH server.
pub async fn read_banner(
    addr: SocketAddr,
    connect_timeout: Duration,
    banner_timeout: Duration,
) -> Result<(String, BannerStream), BannerError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            BannerError::NoAnswer(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {connect_timeout:?}"),
            ))
        })?
        .map_err(BannerError::NoAnswer)?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    match tokio::time::timeout(banner_timeout, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 && line.starts_with("SSH-") => {
            let mut prefix = line.clone().into_bytes();
            prefix.extend_from_slice(reader.buffer());
            Ok((
                line.trim_end().to_owned(),
                BannerStream {
                    prefix,
                    pos: 0,
                    inner: reader.into_inner(),
                },
            ))
        }
        Ok(Ok(_)) => Err(BannerError::NotSsh(line.trim_end().to_owned())),
        Ok(Err(e)) => Err(BannerError::NoBanner(e)),
        Err(_) => Err(BannerError::NoBanner(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no banner within {banner_timeout:?}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_without_ssh_is_not_mistaken_for_a_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        match read_banner(addr, Duration::from_secs(3), Duration::from_secs(5)).await {
            Err(BannerError::NotSsh(line)) => assert!(line.starts_with("HTTP/1.1"), "{line}"),
            Err(other) => panic!("unexpected {other:?}"),
            Ok((b, _)) => panic!("unexpected banner {b}"),
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_no_answer() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let err = read_banner(addr, Duration::from_secs(3), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BannerError::NoAnswer(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
    }
}
