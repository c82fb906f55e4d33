//! The switch: which ports an Ethernet frame goes to, and which frames are refused.
//!
//! Ports are the uplink (the real NIC) and the clients, each with the one MAC address the
//! description gives it. Forwarding is by destination MAC against that static table (no
//! learning: every client's address is known from the description, and the uplink is the
//! port for every other address):
//!
//! - broadcast and multicast (I/G bit set) go to every port but the one they came from;
//! - unicast to a client's MAC goes to that client only;
//! - other unicast goes to the uplink (from a client) or nowhere (from the uplink: not ours).
//!
//! Policy: a client may send only frames whose source is its own MAC; anything else
//! ([`FrameError::SpoofedSource`]) is dropped and counted. A frame from the uplink claiming a
//! client's MAC or a multicast source is dropped too. Frames shorter than an Ethernet header
//! or longer than [`MAX_FRAME`] are malformed.

/// A MAC address.
pub type Mac = [u8; 6];

/// Ethernet header: destination, source, EtherType.
pub const ETH_HEADER: usize = 14;
/// Largest frame without FCS: a 1500-byte MTU plus the header (§5.1.4: no MTU feature is
/// offered, so 1500 applies).
pub const MAX_FRAME: usize = 1514;
/// Most ports besides the uplink.
pub const MAX_CLIENTS: usize = 8;

/// Whether `mac` is a group (multicast or broadcast) address: the I/G bit.
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// Parses `"52:54:00:12:34:61"` (also with `-`), optionally in TOML quotes.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let text = text.trim().trim_matches('"');
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy)]
pub struct MacDisplay(pub Mac);

impl core::fmt::Display for MacDisplay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The real NIC.
    Uplink,
    /// Client `n`.
    Client(usize),
}

/// Why a frame is dropped rather than forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than an Ethernet header.
    TooShort,
    /// Longer than [`MAX_FRAME`].
    TooLong,
    /// A client's frame whose source is not the client's MAC, or an uplink frame whose source
    /// is a client's MAC.
    SpoofedSource,
    /// A group address as source (never valid, IEEE 802.3 §3.2.3).
    MulticastSource,
}

/// The ports a frame goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Targets {
    /// Bit n: client n.
    pub clients: u32,
    /// The uplink.
    pub uplink: bool,
}

impl Targets {
    /// Whether the frame goes nowhere.
    pub fn is_empty(&self) -> bool {
        self.clients == 0 && !self.uplink
    }
}

/// Why a client cannot be attached to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchError {
    /// Index past [`MAX_CLIENTS`].
    BadPort,
    /// A group address cannot be a port's address.
    MulticastMac,
    /// Another client already has this MAC.
    DuplicateMac,
}

/// The forwarding table: each client port's MAC.
#[derive(Debug, Default, Clone)]
pub struct Switch {
    macs: [Option<Mac>; MAX_CLIENTS],
}

impl Switch {
    /// An empty switch (uplink only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives client `port` address `mac`.
    pub fn add_client(&mut self, port: usize, mac: Mac) -> Result<(), SwitchError> {
        if port >= MAX_CLIENTS {
            return Err(SwitchError::BadPort);
        }
        if is_multicast(&mac) {
            return Err(SwitchError::MulticastMac);
        }
        if self
            .macs
            .iter()
            .enumerate()
            .any(|(i, m)| i != port && *m == Some(mac))
        {
            return Err(SwitchError::DuplicateMac);
        }
        self.macs[port] = Some(mac);
        Ok(())
    }

    /// Client `port`'s MAC.
    pub fn mac(&self, port: usize) -> Option<Mac> {
        self.macs.get(port).copied().flatten()
    }

    /// The client with address `mac`.
    fn client_of(&self, mac: &Mac) -> Option<usize> {
        self.macs.iter().position(|m| m.as_ref() == Some(mac))
    }

    /// Where `frame` (from `from`) goes, or why it is dropped.
    pub fn route(&self, from: Port, frame: &[u8]) -> Result<Targets, FrameError> {
        if frame.len() < ETH_HEADER {
            return Err(FrameError::TooShort);
        }
        if frame.len() > MAX_FRAME {
            return Err(FrameError::TooLong);
        }
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        src.copy_from_slice(&frame[6..12]);
        if is_multicast(&src) {
            return Err(FrameError::MulticastSource);
        }
        match from {
            Port::Client(n) if self.mac(n) != Some(src) => return Err(FrameError::SpoofedSource),
            Port::Uplink if self.client_of(&src).is_some() => {
                return Err(FrameError::SpoofedSource);
            }
            _ => {}
        }
        let own = match from {
            Port::Client(n) => 1u32 << n,
            Port::Uplink => 0,
        };
        if is_multicast(&dst) {
            let all = self
                .macs
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_some())
                .fold(0u32, |bits, (i, _)| bits | 1 << i);
            return Ok(Targets {
                clients: all & !own,
                uplink: from != Port::Uplink,
            });
        }
        Ok(match self.client_of(&dst) {
            Some(n) => Targets {
                clients: (1u32 << n) & !own,
                uplink: false,
            },
            None => Targets {
                clients: 0,
                uplink: from != Port::Uplink,
            },
        })
    }
}
