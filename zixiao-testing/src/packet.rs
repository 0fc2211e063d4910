//! Raw Ethernet frames on one interface for network-card tests: an
//! `AF_PACKET` socket bound to the interface that receives the frames of
//! one EtherType arriving on it and sends whole frames out of it (to a TAP,
//! that is to the guest behind it). Needs root (`CAP_NET_RAW`).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// See the module documentation.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn link_address(ifindex: i32, ethertype: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr
}

impl PacketSocket {
    /// A socket on `interface` of the calling thread's network namespace,
    /// receiving the frames of EtherType `ethertype` that arrive on it
    /// (not the ones sent out of it), with a 100 ms receive timeout.
    pub fn open(interface: &str, ethertype: u16) -> io::Result<PacketSocket> {
        // SAFETY: plain socket creation; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ethertype.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(interface).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let addr = link_address(ifindex, ethertype);
        // SAFETY: `addr` is a sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// [`PacketSocket::open`] inside the network namespace `netns` (an
    /// open `/run/netns/NAME`), from a short-lived thread: the socket stays
    /// in that namespace, the caller does not move.
    pub fn open_in(netns: &File, interface: &str, ethertype: u16) -> io::Result<PacketSocket> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on an open namespace file moves only
                    // this short-lived thread.
                    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    PacketSocket::open(interface, ethertype)
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
        })
    }

    /// Sends the whole Ethernet `frame` (headers included) out of the
    /// interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let ethertype = frame
            .get(12..14)
            .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
        let to = link_address(self.ifindex, ethertype);
        // SAFETY: `frame` and `to` are valid for the sizes passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        match sent {
            n if n == frame.len() as isize => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::other("a partial frame was sent")),
        }
    }

    /// The next frame whose payload (after the 14-byte Ethernet header)
    /// starts with `prefix`, others skipped; `None` after `timeout`.
    pub fn recv_starting(&self, prefix: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 14 && buf[14..n as usize].starts_with(prefix) {
                return Some(buf[..n as usize].to_vec());
            }
        }
        None
    }
}

/// The EtherType of the frames zixiao-vmm's C test guest answers: it sends
/// the first one it gets back, as [`GUEST_ECHO_TYPE`].
pub const GUEST_ECHO_REQUEST_TYPE: u16 = 0x88b6;

/// The EtherType of the C test guest's answer to a [`GUEST_ECHO_REQUEST_TYPE`] frame.
pub const GUEST_ECHO_TYPE: u16 = 0x88b5;

/// `aa:bb:cc:dd:ee:ff` as six bytes; `None` if it is not a MAC address.
pub fn mac_bytes(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The MAC address of `interface` in the calling thread's network namespace
/// (`ip link show`, a child process, so the namespace is the thread's and
/// not the one `/sys` was mounted in).
pub fn interface_mac(interface: &str) -> io::Result<[u8; 6]> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", interface])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(mac_bytes)
        .ok_or_else(|| io::Error::other(format!("no MAC address for {interface}: {text}")))
}

/// Sends `payload` from `interface` (a bridge the guest's TAP is on) to the
/// C test guest's card `guest_mac` as a [`GUEST_ECHO_REQUEST_TYPE`] frame,
/// and returns the guest's answer (a [`GUEST_ECHO_TYPE`] frame carrying
/// the payload), or `None` after `timeout`. A frame that comes back has
/// crossed the interface both ways.
pub fn echo_from_guest(
    interface: &str,
    guest_mac: [u8; 6],
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let socket = PacketSocket::open(interface, GUEST_ECHO_TYPE)?;
    let mut frame = guest_mac.to_vec();
    frame.extend(interface_mac(interface)?);
    frame.extend_from_slice(&GUEST_ECHO_REQUEST_TYPE.to_be_bytes());
    frame.extend_from_slice(payload);
    socket.send(&frame)?;
    Ok(socket.recv_starting(payload, timeout))
}
