//! `ovsa-vm-relay 127.0.0.1:PORT`: copies stdin to a TCP connection to a host loopback port and
//! the connection back to stdout. QEMU's `guestfwd=...-cmd:` starts it for each guest connection.
//! Only loopback addresses are accepted: the guest never reaches beyond the host's loopback.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let addr: SocketAddr = match arg.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("usage: ovsa-vm-relay 127.0.0.1:PORT (got {arg:?})");
            std::process::exit(2);
        }
    };
    if !addr.ip().is_loopback() {
        eprintln!("ovsa-vm-relay: {addr} is not a loopback address; refusing");
        std::process::exit(2);
    }
    let tcp = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ovsa-vm-relay: cannot connect to {addr}: {e}");
            std::process::exit(1);
        }
    };
    let mut to_tcp = match tcp.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ovsa-vm-relay: {e}");
            std::process::exit(1);
        }
    };
    // Guest -> host. When the guest closes, half-close toward the host and let the reply drain.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 16384];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_tcp.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_tcp.shutdown(Shutdown::Write);
    });
    // Host -> guest; the relay ends when the host side closes.
    let mut from_tcp = tcp;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16384];
    loop {
        match from_tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    std::process::exit(0);
}
