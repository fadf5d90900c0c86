//! Free loopback ports for fixtures that must be told a port before they bind it (e.g. a
//! function's `AWS_XRAY_DAEMON_ADDRESS`). Another process may take the port between this call and
//! its use; prefer binding `127.0.0.1:0` and passing the bound socket where the API allows it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `127.0.0.1:<port>`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
