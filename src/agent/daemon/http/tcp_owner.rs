//! Which local user opened a loopback TCP connection: the uid the kernel lists for the client's
//! end in `/proc/net/tcp` or `/proc/net/tcp6` (as identd does). The HTTP trigger uses it to give
//! each uid its share of connections.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The uid owning the client end of the connection from `peer` to `local`, when the kernel
/// lists it in this network namespace.
pub fn owner_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let table = match peer {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    find_owner(&text, peer, local)
}

/// The `uid` column of the row whose local address is `peer` and remote address is `local`.
pub fn find_owner(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            return None;
        }
        (parse_addr(cols[1])? == peer && parse_addr(cols[2])? == local)
            .then(|| cols[7].parse().ok())
            .flatten()
    })
}

/// `0100007F:270F` (IPv4) or 32 hex digits and a port (IPv6): the kernel prints each 32-bit word
/// of the address as the host-order integer it holds, and the port in host order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_client_end_not_the_servers() {
        let word = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let lo = word([127, 0, 0, 1]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:270F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
             1: {lo}:270F {lo}:A000 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
             2: {lo}:A000 {lo}:270F 01 00000000:00000000 00:00000000 00000000  1000        0 3 1\n"
        );
        let peer: SocketAddr = "127.0.0.1:40960".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(find_owner(&table, peer, local), Some(1000));
        let other: SocketAddr = "127.0.0.1:40961".parse().unwrap();
        assert_eq!(find_owner(&table, other, local), None);
    }

    #[test]
    fn reads_ipv6_rows() {
        let mut hex = String::new();
        let one = Ipv6Addr::LOCALHOST.octets();
        for c in one.chunks(4) {
            hex.push_str(&format!(
                "{:08X}",
                u32::from_ne_bytes([c[0], c[1], c[2], c[3]])
            ));
        }
        let a = parse_addr(&format!("{hex}:270F")).unwrap();
        assert_eq!(a, "[::1]:9999".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn a_real_connection_is_owned_by_this_process_uid() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (_conn, peer) = server.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert_eq!(
            owner_uid(peer, server.local_addr().unwrap()),
            Some(nix::unistd::geteuid().as_raw())
        );
    }
}
