//! The first bytes of a plaintext connection (StartTLS and None), looked at before lettre
//! reads the greeting, to tell a misconfigured TLS mode from a slow server.
//!
//! An implicit-TLS port (465) waits for the client's TLS ClientHello and says nothing, so a
//! StartTLS client waiting for `220` used to sit out its whole time limit and then report a
//! bare timeout. An SMTP server greets as soon as a client connects (RFC 5321 3.1), so
//! silence on 465 is soon taken for TLS; elsewhere the full command limit applies, since
//! some relays pause before greeting on purpose (greet-pause anti-spam).

use std::time::Duration;

use tokio::net::TcpStream;

/// The port of implicit TLS for submission (RFC 8314).
pub(super) const IMPLICIT_TLS_PORT: u16 = 465;

/// What arrived first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FirstBytes {
    /// Anything that is not TLS: a greeting (or an error lettre will report).
    Plain,
    /// A TLS record (handshake or alert): the port speaks implicit TLS.
    Tls,
    /// Nothing within the wait.
    Silent,
}

/// How long to wait for the first byte of the greeting.
pub(super) fn wait_for(port: u16, greeting: Duration, command: Duration) -> Duration {
    if port == IMPLICIT_TLS_PORT {
        greeting.min(command)
    } else {
        command
    }
}

/// TLS records start with their content type: 0x16 handshake, 0x15 alert.
pub(super) fn classify(first: u8) -> FirstBytes {
    match first {
        0x15 | 0x16 => FirstBytes::Tls,
        _ => FirstBytes::Plain,
    }
}

/// TCP to each resolved address in turn, each with the full connect limit (as lettre does
/// for implicit TLS), so an unreachable IPv6 address does not use up the time of a working
/// IPv4 one. `Err(None)`: every attempt timed out.
pub(super) async fn connect(
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<TcpStream, Option<std::io::Error>> {
    let addrs = match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => return Err(Some(e)),
        Err(_) => return Err(None),
    };
    let (mut tried, mut last) = (false, None);
    for addr in addrs {
        tried = true;
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {}
        }
    }
    if !tried {
        return Err(Some(std::io::Error::other(
            "the host name resolved to no address",
        )));
    }
    Err(last)
}

/// Peeks (without consuming) at the first byte, so lettre still reads the whole greeting.
pub(super) async fn first_bytes(tcp: &TcpStream, wait: Duration) -> FirstBytes {
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, tcp.peek(&mut first)).await {
        Err(_) => FirstBytes::Silent,
        Ok(Ok(n)) if n > 0 => classify(first[0]),
        // Closed or failed: lettre's read of the greeting reports it with its own words.
        Ok(_) => FirstBytes::Plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_on_port_465_is_judged_after_the_short_greeting_wait() {
        let (greeting, command) = (Duration::from_secs(5), Duration::from_secs(30));
        assert_eq!(wait_for(465, greeting, command), greeting);
        assert_eq!(wait_for(587, greeting, command), command);
        assert_eq!(wait_for(25, greeting, command), command);
        assert_eq!(
            wait_for(465, greeting, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn tls_records_are_told_from_an_smtp_greeting() {
        assert_eq!(classify(0x16), FirstBytes::Tls);
        assert_eq!(classify(0x15), FirstBytes::Tls);
        assert_eq!(classify(b'2'), FirstBytes::Plain);
        assert_eq!(classify(b'4'), FirstBytes::Plain);
    }
}
