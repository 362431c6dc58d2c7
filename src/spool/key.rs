//! Where a spooled copy is, and its name for the admin.

/// Where one entry is: its name for the admin (`spool show L1F`), stable for as long
/// as the entry is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// In this gateway's sled spool.
    Local(u64),
    /// In the cluster's shared spool.
    Shared(u64),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Local(n) => write!(f, "L{n:X}"),
            Key::Shared(n) => write!(f, "S{n:X}"),
        }
    }
}

impl std::str::FromStr for Key {
    type Err = ();

    /// Reads what [`Key`]'s `Display` writes; the letter in either case.
    fn from_str(text: &str) -> Result<Key, ()> {
        let text = text.trim();
        let (kind, hex) = text.split_at_checked(1).ok_or(())?;
        if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        let n = u64::from_str_radix(hex, 16).map_err(|_| ())?;
        match kind {
            "L" | "l" => Ok(Key::Local(n)),
            "S" | "s" => Ok(Key::Shared(n)),
            _ => Err(()),
        }
    }
}
