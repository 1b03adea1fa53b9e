//! Reading packet bytes the way people paste them: plain hex, `0x`-prefixed hex, or a
//! `tcpdump -x`/`-X`/`-XX` hex dump, and unwrapping an Ethernet frame when that is what it is.

use pnet_packet::Packet;
use pnet_packet::ethernet::{EtherType, EtherTypes, EthernetPacket};

/// Why the input is not one packet's worth of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// A character that is neither a hex digit, white space nor part of a `0x` prefix.
    #[error("invalid hex input: {found:?} at character {position} is not a hex digit")]
    BadDigit {
        /// The offending character.
        found: char,
        /// Its 1-based position in the input.
        position: usize,
    },
    /// An odd number of hex digits.
    #[error("invalid hex input: odd number of hex digits ({0})")]
    OddLength(usize),
    /// Nothing to decode.
    #[error("invalid hex input: no hex digits")]
    Empty,
    /// A tcpdump text with more than one packet dump.
    #[error("the input holds {0} tcpdump packet dumps: pass one packet")]
    SeveralDumps(usize),
}

/// Turns the text into bytes.
///
/// A tcpdump hex dump (lines like `\t0x0010:  0028 0009 ...  ..ascii..`) is recognised by its
/// offset column; only the hex columns are read. Otherwise every hex digit counts; white
/// space, `0x`/`0X` prefixes, `:` and `-` separators, and `#` comments to the end of a line
/// are ignored.
pub fn parse(text: &str) -> Result<Vec<u8>, HexError> {
    let dumps = tcpdump_dumps(text);
    let digits = match dumps.len() {
        0 => plain_digits(text)?,
        1 => dumps.into_iter().next().unwrap_or_default(),
        n => return Err(HexError::SeveralDumps(n)),
    };
    if digits.is_empty() {
        return Err(HexError::Empty);
    }
    if digits.len() % 2 != 0 {
        return Err(HexError::OddLength(digits.len()));
    }
    // Every character is an ASCII hex digit by now.
    hex::decode(&digits).map_err(|_| HexError::OddLength(digits.len()))
}

fn plain_digits(text: &str) -> Result<String, HexError> {
    let mut digits = String::with_capacity(text.len());
    let mut chars = text.chars().enumerate().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '#' {
            while chars.next_if(|(_, c)| *c != '\n').is_some() {}
        } else if c == '0' && matches!(chars.peek(), Some((_, 'x' | 'X'))) {
            chars.next();
        } else if c.is_ascii_hexdigit() {
            digits.push(c);
        } else if !(c.is_whitespace() || c == ':' || c == '-') {
            return Err(HexError::BadDigit { found: c, position: i + 1 });
        }
    }
    Ok(digits)
}

/// The hex digits of each tcpdump dump in the text, one string per packet.
fn tcpdump_dumps(text: &str) -> Vec<String> {
    let mut dumps: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some((offset, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Some(offset) = offset.strip_prefix("0x") else {
            continue;
        };
        if offset.len() != 4 || !offset.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        // The hex columns end at the first double space (the ASCII column follows).
        let columns = rest.trim_start().split("  ").next().unwrap_or_default();
        let hex: String = columns.chars().filter(|c| !c.is_whitespace()).collect();
        if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        match dumps.last_mut() {
            Some(current) if offset != "0000" => current.push_str(&hex),
            _ => dumps.push(hex),
        }
    }
    dumps
}

/// If `bytes` is an Ethernet frame carrying IPv4 or IPv6 (optionally 802.1Q tagged),
/// returns the IP packet inside it.
pub fn ip_in_ethernet(bytes: &[u8]) -> Option<Vec<u8>> {
    let frame = EthernetPacket::new(bytes)?;
    let mut ethertype = frame.get_ethertype();
    let mut payload = frame.payload();
    // 802.1Q / 802.1ad tags: 2 bytes of tag control, then the inner ethertype.
    for _ in 0..2 {
        if ethertype != EtherTypes::Vlan && ethertype != EtherTypes::QinQ {
            break;
        }
        let [_, _, hi, lo, rest @ ..] = payload else {
            return None;
        };
        ethertype = EtherType(u16::from_be_bytes([*hi, *lo]));
        payload = rest;
    }
    (ethertype == EtherTypes::Ipv4 || ethertype == EtherTypes::Ipv6).then(|| payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hex_ignores_spaces_and_prefixes() {
        assert_eq!(parse("0x45 c0\n00-28").unwrap(), vec![0x45, 0xc0, 0x00, 0x28]);
        assert_eq!(parse("0X4500").unwrap(), vec![0x45, 0x00]);
        assert_eq!(parse("# a comment: ff\n45 # more\n00").unwrap(), vec![0x45, 0x00]);
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(parse("45zz"), Err(HexError::BadDigit { found: 'z', position: 3 }));
        assert_eq!(parse("450"), Err(HexError::OddLength(3)));
        assert_eq!(parse("  \n"), Err(HexError::Empty));
    }

    #[test]
    fn tcpdump_dump_reads_only_hex_columns() {
        let text = "12:00 x > y: VRRPv2\n\t0x0000:  4500 0028  E..(\n\t0x0010:  ab  ..\n";
        assert_eq!(parse(text).unwrap(), vec![0x45, 0x00, 0x00, 0x28, 0xab]);
        let two = format!("{text}{text}");
        assert_eq!(parse(&two), Err(HexError::SeveralDumps(2)));
    }

    #[test]
    fn ethernet_frames_are_unwrapped_also_when_vlan_tagged() {
        let mut frame = vec![0xff; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00, 0x45, 0x00]);
        assert_eq!(ip_in_ethernet(&frame), Some(vec![0x45, 0x00]));
        frame[16] = 0x08;
        frame[17] = 0x06; // ARP
        assert_eq!(ip_in_ethernet(&frame), None);
    }
}
